//! Where incoming messages go: responses to the requests waiting for them,
//! progress to its handlers, server requests to the request handler.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use serde_json::Value;
use serde_json::value::RawValue;
use session_core::wire::{
    ErrorObject, Message, Notification, ProgressParams, Request, RequestId, Response, to_raw,
};
use tokio::sync::{Notify, oneshot};

use crate::options::{ClientEvent, ClientOptions, ProgressHandler, method_not_found};
use crate::transport::Transport;

/// What a request waits for.
pub(crate) type Outcome = Result<Box<RawValue>, ErrorObject>;

/// A request waiting for its response.
struct Waiting {
    answer: oneshot::Sender<Outcome>,
    progress: Option<(ProgressHandler, Arc<Notify>)>,
}

/// Routes incoming messages.
pub(crate) struct Router {
    waiting: Mutex<HashMap<RequestId, Waiting>>,
    options: ClientOptions,
    transport: Mutex<Option<Weak<dyn Transport>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("waiting", &self.waiting.lock().len())
            .finish_non_exhaustive()
    }
}

impl Router {
    pub(crate) fn new(options: ClientOptions) -> Self {
        Router {
            waiting: Mutex::new(HashMap::new()),
            options,
            transport: Mutex::new(None),
        }
    }

    /// The transport server requests are answered through.
    pub(crate) fn set_transport(&self, transport: Weak<dyn Transport>) {
        *self.transport.lock() = Some(transport);
    }

    /// Registers a request; its progress (if asked for) is keyed by its id.
    pub(crate) fn wait_for(
        &self,
        id: RequestId,
        progress: Option<(ProgressHandler, Arc<Notify>)>,
    ) -> oneshot::Receiver<Outcome> {
        let (answer, rx) = oneshot::channel();
        self.waiting.lock().insert(id, Waiting { answer, progress });
        rx
    }

    /// Stops waiting for a request; whether it was still waited for.
    pub(crate) fn forget(&self, id: &RequestId) -> bool {
        self.waiting.lock().remove(id).is_some()
    }

    /// Whether a request is still waiting for its response.
    pub(crate) fn is_waiting(&self, id: &RequestId) -> bool {
        self.waiting.lock().contains_key(id)
    }

    /// Fails every waiting request (the transport stopped).
    pub(crate) fn fail_all(&self, error: &ErrorObject) {
        for (_, waiting) in self.waiting.lock().drain() {
            let _ = waiting.answer.send(Err(error.clone()));
        }
    }

    /// Fails one waiting request.
    pub(crate) fn fail(&self, id: &RequestId, error: ErrorObject) {
        if let Some(waiting) = self.waiting.lock().remove(id) {
            let _ = waiting.answer.send(Err(error));
        }
    }

    fn emit(&self, event: ClientEvent) {
        if let Some(handler) = &self.options.on_event {
            handler(&event);
        }
    }

    /// Takes one incoming message.
    pub(crate) fn deliver(&self, message: Message) {
        match message {
            Message::Response(response) => self.answer(response),
            Message::Notification(note) => self.notification(note),
            Message::Request(request) => self.server_request(request),
        }
    }

    fn answer(&self, response: Response) {
        let Some(id) = response.id else {
            tracing::warn!("an error response without id: {:?}", response.outcome.err());
            return;
        };
        match self.waiting.lock().remove(&id) {
            Some(waiting) => {
                let _ = waiting.answer.send(response.outcome);
            }
            // A response after a timeout or cancellation: ignored.
            None => tracing::debug!(%id, "late response ignored"),
        }
    }

    fn notification(&self, note: Notification) {
        let params: Value = note
            .params
            .as_deref()
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or(Value::Null);
        if note.method == "notifications/progress"
            && let Ok(progress) = serde_json::from_value::<ProgressParams>(params.clone())
            && let Ok(id) = serde_json::from_value::<RequestId>(progress.progress_token.clone())
        {
            let handler = self
                .waiting
                .lock()
                .get(&id)
                .and_then(|w| w.progress.clone());
            if let Some((handler, notify)) = handler {
                notify.notify_one();
                handler(progress.progress, progress.total, progress.message);
            }
            return;
        }
        self.emit(ClientEvent::Notification {
            method: note.method,
            params,
        });
    }

    fn server_request(&self, request: Request) {
        let transport = self.transport.lock().as_ref().and_then(Weak::upgrade);
        let Some(transport) = transport else {
            return;
        };
        let handler = self.options.on_request.clone();
        tokio::spawn(async move {
            let params: Value = request
                .params
                .as_deref()
                .and_then(|p| serde_json::from_str(p.get()).ok())
                .unwrap_or(Value::Null);
            let outcome = match handler {
                Some(handler) => handler(request.method.clone(), params).await,
                None => Err(method_not_found(&request.method)),
            };
            let response = Response {
                id: Some(request.id),
                outcome: outcome.map(|v| to_raw(&v)),
            };
            if let Err(e) = transport.send(Message::Response(response)).await {
                tracing::warn!("cannot answer a server request: {e}");
            }
        });
    }
}
