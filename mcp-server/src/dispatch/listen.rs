//! `subscriptions/listen` (2026-07-28): long-lived streams of the change
//! notifications a client opted in to, each tagged with the subscription's
//! id.
//!
//! A change announced on one replica reaches the listeners of every replica
//! sharing the store: it is delivered here at once and appended to a
//! shared channel in the event store, which every other process follows
//! (`EventStore::wait_after`) and delivers from. A process skips what it
//! appended itself.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use session_core::wire::{ErrorObject, Message, Notification, RequestId, code, to_raw};
use session_core::{EventId, EventStore, SessionId, StreamId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The `_meta` key that tags every message of a subscription.
pub(crate) const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The event-store "session" that carries changes between replicas. Not a
/// minted session id (those are 32 hex digits), so no client can name it.
const CHANGES: &str = "mcp-server-changes";

/// A change a listener may hear of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub(crate) enum Change {
    ToolsListChanged,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated {
        uri: String,
    },
    /// A task changed: `task` is its `DetailedTask`, heard only by
    /// listeners of its principal that named it (`taskIds`).
    Task {
        owner: Option<String>,
        task: Value,
    },
}

impl Change {
    fn method(&self) -> &'static str {
        match self {
            Change::ToolsListChanged => "notifications/tools/list_changed",
            Change::PromptsListChanged => "notifications/prompts/list_changed",
            Change::ResourcesListChanged => "notifications/resources/list_changed",
            Change::ResourceUpdated { .. } => "notifications/resources/updated",
            Change::Task { .. } => "notifications/tasks",
        }
    }
}

/// What a listener opted in to (`params.notifications`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Filter {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) tools_list_changed: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) prompts_list_changed: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) resources_list_changed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) resource_subscriptions: Option<BTreeSet<String>>,
    /// Tasks whose status changes to hear of (`notifications/tasks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) task_ids: Option<BTreeSet<String>>,
}

impl Filter {
    /// Reads `params.notifications`: every known field must have its type;
    /// unknown ones are left out (the acknowledgement omits what is not
    /// honoured).
    pub(crate) fn parse(params: Option<&Value>) -> Result<Filter, ErrorObject> {
        let bad = |why: &str| {
            ErrorObject::new(
                code::INVALID_PARAMS,
                format!("Invalid params: subscriptions/listen {why}"),
            )
        };
        let Some(notifications) = params.and_then(|p| p.get("notifications")) else {
            return Err(bad("needs a `notifications` object naming what to receive"));
        };
        let Some(fields) = notifications.as_object() else {
            return Err(bad("`notifications` must be an object"));
        };
        let mut filter = Filter::default();
        for (name, value) in fields {
            let flag = |value: &Value| {
                value
                    .as_bool()
                    .ok_or_else(|| bad(&format!("`notifications.{name}` must be a boolean")))
            };
            match name.as_str() {
                "toolsListChanged" => filter.tools_list_changed = flag(value)?,
                "promptsListChanged" => filter.prompts_list_changed = flag(value)?,
                "resourcesListChanged" => filter.resources_list_changed = flag(value)?,
                "resourceSubscriptions" => {
                    let uris = value
                        .as_array()
                        .and_then(|uris| {
                            uris.iter()
                                .map(|u| u.as_str().map(str::to_string))
                                .collect::<Option<BTreeSet<String>>>()
                        })
                        .ok_or_else(|| {
                            bad("`notifications.resourceSubscriptions` must be an array of URIs")
                        })?;
                    filter.resource_subscriptions = Some(uris);
                }
                "taskIds" => {
                    let ids = value
                        .as_array()
                        .and_then(|ids| {
                            ids.iter()
                                .map(|u| u.as_str().map(str::to_string))
                                .collect::<Option<BTreeSet<String>>>()
                        })
                        .ok_or_else(|| {
                            bad("`notifications.taskIds` must be an array of task ids")
                        })?;
                    filter.task_ids = Some(ids);
                }
                // Not a type this server knows: not honoured, so not
                // acknowledged.
                _ => {}
            }
        }
        Ok(filter)
    }

    /// Keeps what the server can honour.
    pub(crate) fn honoured(mut self, prompts: bool, resources: bool) -> Filter {
        self.prompts_list_changed &= prompts;
        self.resources_list_changed &= resources;
        if !resources {
            self.resource_subscriptions = None;
        }
        self
    }

    fn wants(&self, change: &Change, principal: Option<&str>) -> bool {
        match change {
            Change::Task { owner, task } => {
                owner.as_deref() == principal
                    && task
                        .get("taskId")
                        .and_then(Value::as_str)
                        .is_some_and(|id| {
                            self.task_ids.as_ref().is_some_and(|ids| ids.contains(id))
                        })
            }
            Change::ToolsListChanged => self.tools_list_changed,
            Change::PromptsListChanged => self.prompts_list_changed,
            Change::ResourcesListChanged => self.resources_list_changed,
            Change::ResourceUpdated { uri } => self
                .resource_subscriptions
                .as_ref()
                .is_some_and(|uris| uris.contains(uri)),
        }
    }
}

/// A notification of a subscription, tagged with its id.
pub(crate) fn tagged(method: &str, id: &RequestId, mut params: Value) -> Message {
    if !params.is_object() {
        params = json!({});
    }
    params["_meta"] = json!({ SUBSCRIPTION_ID: id });
    Message::Notification(Notification {
        method: method.into(),
        params: Some(to_raw(&params)),
    })
}

struct Listener {
    filter: Filter,
    id: RequestId,
    /// Who listens: task notifications are for their own principal only.
    principal: Option<String>,
    outbox: mpsc::Sender<Box<Message>>,
    /// Ends the listen request (its stream cannot keep up).
    end: CancellationToken,
}

/// The `subscriptions/listen` streams open on this process.
#[derive(Default)]
pub(crate) struct Listeners {
    next: AtomicU64,
    open: Mutex<foldhash::HashMap<u64, Listener>>,
    /// Tells this process's own appends from other replicas'.
    origin: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("open", &self.open.lock().len())
            .finish()
    }
}

/// Unregisters a listener when dropped.
#[derive(Debug)]
pub(crate) struct Registration<'a> {
    owner: &'a Listeners,
    number: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.owner.open.lock().remove(&self.number);
    }
}

/// One change as it travels between replicas.
#[derive(Debug, Serialize, Deserialize)]
struct Travelling {
    origin: String,
    change: Change,
}

impl Listeners {
    fn origin(&self) -> &str {
        self.origin
            .get_or_init(|| SessionId::generate().as_str().to_string())
    }

    /// Registers a listener; it hears changes until the registration drops
    /// or `end` is cancelled (by a stream that cannot keep up).
    pub(crate) fn add(
        &self,
        filter: Filter,
        id: RequestId,
        principal: Option<String>,
        outbox: mpsc::Sender<Box<Message>>,
        end: CancellationToken,
    ) -> Registration<'_> {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(
            number,
            Listener {
                filter,
                id,
                principal,
                outbox,
                end,
            },
        );
        Registration {
            owner: self,
            number,
        }
    }

    /// How many listeners are open here.
    pub(crate) fn len(&self) -> usize {
        self.open.lock().len()
    }

    /// Delivers `change` to the listeners here that opted in; returns how
    /// many.
    pub(crate) fn deliver(&self, change: &Change) -> usize {
        let params = match change {
            Change::ResourceUpdated { uri } => json!({ "uri": uri }),
            Change::Task { task, .. } => task.clone(),
            _ => json!({}),
        };
        let mut told = 0;
        let mut open = self.open.lock();
        open.retain(|_, listener| {
            if !listener.filter.wants(change, listener.principal.as_deref()) {
                return true;
            }
            let note = tagged(change.method(), &listener.id, params.clone());
            if listener.outbox.try_send(Box::new(note)).is_ok() {
                told += 1;
                true
            } else {
                // Full or gone: a stream that cannot keep up ends (the
                // client listens again).
                listener.end.cancel();
                false
            }
        });
        told
    }

    /// Delivers `change` here and appends it for the other replicas.
    pub(crate) async fn announce(&self, events: &Arc<dyn EventStore>, change: Change) -> usize {
        let told = self.deliver(&change);
        let travelling = Travelling {
            origin: self.origin().to_string(),
            change,
        };
        let data: Arc<str> = Arc::from(serde_json::to_string(&travelling).unwrap_or_default());
        if let Err(e) = events
            .append(&changes_channel(), &StreamId::standalone(), data)
            .await
        {
            tracing::warn!("cannot share a change with other replicas: {e}");
        }
        told
    }

    /// Follows the changes other replicas append until `stop`, delivering
    /// them here and handing each to `heard` (the task runtime stops a
    /// worker whose task was cancelled elsewhere). Returns at once when the
    /// store has no other writers.
    pub(crate) async fn follow(
        &self,
        events: Arc<dyn EventStore>,
        stop: CancellationToken,
        heard: &(dyn Fn(&Change) + Send + Sync),
    ) {
        let channel = changes_channel();
        let standalone = StreamId::standalone();
        let mut last = match events.latest(&channel, &standalone).await {
            Ok(Some(id)) => id,
            _ => EventId {
                stream: standalone.clone(),
                seq: 0,
            },
        };
        loop {
            let read = tokio::select! {
                read = events.wait_after(&channel, &last, 256) => read,
                () = stop.cancelled() => return,
            };
            match read {
                Ok(None) => return,
                Ok(Some(batch)) => {
                    for event in batch {
                        last = event.id.clone();
                        match serde_json::from_str::<Travelling>(&event.data) {
                            Ok(t) if t.origin != self.origin() => {
                                heard(&t.change);
                                self.deliver(&t.change);
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!("a change that cannot be read: {e}"),
                        }
                    }
                }
                Err(e) => {
                    crate::hub::unfollowed("the changes of other replicas", &e);
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }
}

fn changes_channel() -> SessionId {
    SessionId::parse(CHANGES).expect("a valid id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_known_fields_and_drop_unknown_ones() {
        let params = json!({"notifications": {
            "toolsListChanged": true,
            "resourceSubscriptions": ["test://a"],
            "somethingNew": true
        }});
        let filter = Filter::parse(Some(&params)).unwrap();
        assert!(filter.tools_list_changed && !filter.prompts_list_changed);
        assert_eq!(
            serde_json::to_value(&filter).unwrap(),
            json!({"toolsListChanged": true, "resourceSubscriptions": ["test://a"]})
        );
        for bad in [
            json!({}),
            json!({"notifications": true}),
            json!({"notifications": {"toolsListChanged": "yes"}}),
            json!({"notifications": {"resourceSubscriptions": "test://a"}}),
            json!({"notifications": {"resourceSubscriptions": [1]}}),
        ] {
            let error = Filter::parse(Some(&bad)).unwrap_err();
            assert_eq!(error.code, code::INVALID_PARAMS, "{bad}");
        }
        let honoured = filter.honoured(false, false);
        assert_eq!(honoured.resource_subscriptions, None);
    }

    #[tokio::test]
    async fn a_change_reaches_only_listeners_that_opted_in_tagged_with_their_id() {
        let listeners = Listeners::default();
        let (tools_tx, mut tools_rx) = mpsc::channel(4);
        let (uri_tx, mut uri_rx) = mpsc::channel(4);
        let tools = Filter {
            tools_list_changed: true,
            ..Filter::default()
        };
        let uri = Filter {
            resource_subscriptions: Some(["test://a".to_string()].into()),
            ..Filter::default()
        };
        let _a = listeners.add(
            tools,
            RequestId::from(7),
            None,
            tools_tx,
            CancellationToken::new(),
        );
        let _b = listeners.add(
            uri,
            RequestId::from("s"),
            None,
            uri_tx,
            CancellationToken::new(),
        );
        assert_eq!(listeners.deliver(&Change::ToolsListChanged), 1);
        let update = Change::ResourceUpdated {
            uri: "test://a".into(),
        };
        assert_eq!(listeners.deliver(&update), 1);
        let other = Change::ResourceUpdated {
            uri: "test://b".into(),
        };
        assert_eq!(listeners.deliver(&other), 0);
        let note = tools_rx.try_recv().unwrap().to_json();
        assert!(note.contains("notifications/tools/list_changed"), "{note}");
        assert!(
            note.contains(r#""io.modelcontextprotocol/subscriptionId":7"#),
            "{note}"
        );
        let note = uri_rx.try_recv().unwrap().to_json();
        assert!(
            note.contains(r#""uri":"test://a""#) && note.contains(r#":"s""#),
            "{note}"
        );
        assert!(tools_rx.try_recv().is_err() && uri_rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_listener_that_cannot_keep_up_is_ended() {
        let listeners = Listeners::default();
        let (tx, _rx) = mpsc::channel(1);
        let end = CancellationToken::new();
        let filter = Filter {
            tools_list_changed: true,
            ..Filter::default()
        };
        let _registration = listeners.add(filter, RequestId::from(1), None, tx, end.clone());
        assert_eq!(listeners.deliver(&Change::ToolsListChanged), 1);
        assert_eq!(listeners.deliver(&Change::ToolsListChanged), 0);
        assert!(end.is_cancelled());
        assert_eq!(listeners.len(), 0);
    }
}
