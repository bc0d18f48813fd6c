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

use crate::Error;
use crate::options::{ClientEvent, ClientOptions, ProgressHandler, method_not_found};
use crate::transport::Transport;

/// Why a request got no result.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with a JSON-RPC error (whatever its code: an
    /// in-band error never means the session is gone).
    Server(ErrorObject),
    /// Something on this side ended the wait: the session is gone (HTTP
    /// 404 while resuming the response stream), the stream broke, the
    /// transport stopped.
    Local(Error),
}

/// What a request waits for.
pub(crate) type Outcome = Result<Box<RawValue>, Failure>;

/// Why the router takes no more requests.
#[derive(Debug, Clone)]
pub(crate) enum Shut {
    /// The client was closed or disconnected.
    Closed,
    /// The transport stopped by itself (a stdio server exited).
    Transport(String),
}

impl Shut {
    fn error(&self) -> Error {
        match self {
            Shut::Closed => Error::Closed,
            Shut::Transport(message) => Error::Transport {
                message: message.clone(),
                source: None,
            },
        }
    }
}

/// Called with the session id when the transport learns, outside any
/// request, that the server lost the session (a GET answered 404).
pub(crate) type SessionLost = Box<dyn Fn(String) + Send + Sync>;

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
    shut: Mutex<Option<Shut>>,
    session_lost: Mutex<Option<Arc<SessionLost>>>,
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
            shut: Mutex::new(None),
            session_lost: Mutex::new(None),
        }
    }

    /// What to do when the transport finds the session gone by itself.
    pub(crate) fn on_session_lost(&self, callback: SessionLost) {
        *self.session_lost.lock() = Some(Arc::new(callback));
    }

    /// Reports a session the server no longer knows, found outside a request.
    pub(crate) fn session_lost(&self, session: String) {
        let callback = self.session_lost.lock().clone();
        if let Some(callback) = callback {
            callback(session);
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
        // Checked under the same lock `shut` takes: a request registered
        // after the transport stopped fails at once instead of timing out.
        let mut waiting = self.waiting.lock();
        if let Some(shut) = self.shut.lock().as_ref() {
            let _ = answer.send(Err(Failure::Local(shut.error())));
            return rx;
        }
        waiting.insert(id, Waiting { answer, progress });
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

    /// Stops taking requests and fails every waiting one. The first reason
    /// given is kept (closing the client, then its stdio server exiting,
    /// reads as closed).
    pub(crate) fn shut(&self, reason: Shut) {
        let mut waiting = self.waiting.lock();
        let reason = self.shut.lock().get_or_insert(reason).clone();
        for (_, waiting) in waiting.drain() {
            let _ = waiting.answer.send(Err(Failure::Local(reason.error())));
        }
    }

    /// Fails one waiting request with a local failure.
    pub(crate) fn fail(&self, id: &RequestId, error: Error) {
        if let Some(waiting) = self.waiting.lock().remove(id) {
            let _ = waiting.answer.send(Err(Failure::Local(error)));
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
                let _ = waiting
                    .answer
                    .send(response.outcome.map_err(Failure::Server));
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
        let bound = self.options.request_timeout;
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
            match tokio::time::timeout(
                bound,
                transport.send(Message::Response(response), Default::default()),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("cannot answer a server request: {e}"),
                Err(_) => tracing::warn!("answering a server request timed out after {bound:?}"),
            }
        });
    }
}
