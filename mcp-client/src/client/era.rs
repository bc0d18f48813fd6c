//! The 2026-07-28 era in the client: which era a server speaks (probe and
//! fall back), requests with their envelope and headers, `input_required`
//! rounds answered by the application's handlers.

use super::*;

/// The error of an `UnsupportedProtocolVersionError` (`-32022`), if `e` is
/// one.
fn unsupported_version(e: &Error) -> Option<&session_core::wire::ErrorObject> {
    match e {
        Error::Rpc { error, .. } if error.code == code::UNSUPPORTED_PROTOCOL_VERSION => Some(error),
        _ => None,
    }
}

/// Whether an answer to the `server/discover` probe says the server is a
/// legacy one: an HTTP 4xx, a JSON-RPC error that is not one of the modern
/// ones, a connection closed or an answer that is not JSON-RPC, or no
/// answer in time.
fn sounds_legacy(e: &Error) -> bool {
    match e {
        Error::Http { status, .. } => (400..500).contains(status),
        Error::Rpc { error, .. } => !modern::is_modern_error(error.code),
        Error::Transport { .. } | Error::Protocol(_) | Error::Timeout { .. } => true,
        _ => false,
    }
}

/// The bound on one request however many times it is sent (re-issued
/// after a broken stream, retried after `-32022` or `-32020`): its timeout
/// rules taken once, from its first attempt.
struct Deadline {
    started: tokio::time::Instant,
    at: tokio::time::Instant,
}

impl Deadline {
    /// The deadline `options` set (`default` being the client's timeout):
    /// the timeout, or with `reset_timeout_on_progress` the longest total.
    fn of(options: &RequestOptions, default: std::time::Duration) -> Deadline {
        let timeout = options.timeout.unwrap_or(default);
        let total = if options.reset_timeout_on_progress {
            options.max_total_timeout.unwrap_or(timeout * 10)
        } else {
            timeout
        };
        let started = tokio::time::Instant::now();
        Deadline {
            started,
            at: started + total,
        }
    }

    /// `options` for one more attempt, cut to what is left.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when nothing is left.
    fn bound(&self, method: &str, options: &RequestOptions) -> Result<RequestOptions> {
        let left = self
            .at
            .saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                method: method.to_string(),
                after: self.started.elapsed(),
            });
        }
        let mut bounded = options.clone();
        bounded.timeout = Some(options.timeout.map_or(left, |t| t.min(left)));
        if bounded.reset_timeout_on_progress {
            bounded.max_total_timeout = Some(left);
        }
        Ok(bounded)
    }
}

/// Whether a `server/discover` result names a modern revision this client
/// speaks.
fn speaks_modern(result: &Value) -> bool {
    result["supportedVersions"]
        .as_array()
        .is_some_and(|versions| {
            versions.iter().any(|v| {
                v.as_str()
                    .is_some_and(|v| MODERN_PROTOCOL_VERSIONS.contains(&v))
            })
        })
}

/// The change notifications to listen for: the list changes the server's
/// capabilities say it announces.
fn listen_filter(capabilities: &Value) -> Map<String, Value> {
    let mut filter = Map::new();
    for (capability, key) in [
        ("tools", "toolsListChanged"),
        ("prompts", "promptsListChanged"),
        ("resources", "resourcesListChanged"),
    ] {
        if capabilities[capability]["listChanged"] == json!(true) {
            filter.insert(key.into(), true.into());
        }
    }
    filter
}

impl Client {
    /// Sets the era up as the client's [`ProtocolMode`] says.
    pub(super) async fn start(&self) -> Result<()> {
        match self.inner.options.protocol.clone() {
            ProtocolMode::Legacy => self.handshake().await,
            ProtocolMode::Pinned(version) => {
                if !MODERN_PROTOCOL_VERSIONS.contains(&version.as_str()) {
                    return Err(Error::InvalidArgument(format!(
                        "protocol version {version:?}: this client pins only {MODERN_PROTOCOL_VERSIONS:?}"
                    )));
                }
                self.discover(&version, false).await
            }
            ProtocolMode::Auto => {
                let key = self.inner.era_key.as_ref();
                let cached = key.and_then(|k| era_cache().lock().get(k).cloned());
                match cached {
                    Some(None) => self.handshake().await,
                    Some(Some(version)) => self.discover(&version, true).await,
                    None => self.discover(MODERN_PROTOCOL_VERSIONS[0], true).await,
                }
            }
        }
    }

    /// Keeps the era verdict for this server URL.
    fn remember(&self, modern: Option<&str>) {
        if let Some(key) = &self.inner.era_key {
            era_cache()
                .lock()
                .insert(key.clone(), modern.map(str::to_string));
        }
    }

    /// Speaks modern revision `version` from now on.
    async fn set_modern(&self, version: &str) {
        *self.inner.modern.write() = Some(version.to_string());
        *self.inner.protocol_version.write() = Some(version.to_string());
        self.inner.transport.established(version, false).await;
    }

    /// `server/discover` in revision `version`: the era is modern when it
    /// answers with a discover result naming a modern revision this client
    /// speaks. A `-32022` naming one is tried once more in it (the same one
    /// too: a server may refuse a first request whatever it carried); with
    /// `fall_back`, an answer that sounds legacy (or a `-32022` naming only
    /// legacy revisions, or a result that is not a discover result) starts
    /// an `initialize` handshake instead.
    async fn discover(&self, version: &str, fall_back: bool) -> Result<()> {
        let mut version = version.to_string();
        let mut retried = false;
        let budget = RequestOptions::default().timeout(self.inner.options.connect_timeout);
        // One bound for the probe, retries and re-issues included.
        let deadline = Deadline::of(&budget, self.inner.options.connect_timeout);
        loop {
            self.set_modern(&version).await;
            let error = match self
                .exchange_once("server/discover", &json!({}), &budget, &deadline)
                .await
            {
                Ok(Reply::Complete(result)) if speaks_modern(&result) => {
                    let filter = listen_filter(&result["capabilities"]);
                    self.learn(&version, result);
                    self.remember(Some(&version));
                    if self.inner.options.listen && !filter.is_empty() {
                        self.listen(filter).await;
                    }
                    return Ok(());
                }
                Ok(_) => {
                    // An answer, but not a modern one: a legacy server.
                    if fall_back {
                        return self.fall_back(true).await;
                    }
                    Error::Protocol(
                        "server/discover answered with something that is not a discover \
                         result naming a revision this client speaks"
                            .into(),
                    )
                }
                Err(e) => e,
            };
            if let Some(refusal) = unsupported_version(&error) {
                let supported = modern::supported_versions(refusal);
                if !retried && let Some(next) = self.next_version(&supported, &version) {
                    version = next;
                    retried = true;
                    continue;
                }
                if fall_back && supported.iter().any(|v| is_supported(v)) {
                    return self.fall_back(true).await;
                }
                self.forget_modern();
                return Err(Error::VersionMismatch {
                    server: supported.join(", "),
                    supported: MODERN_PROTOCOL_VERSIONS,
                });
            }
            if fall_back && sounds_legacy(&error) {
                tracing::debug!("server/discover failed ({error}): trying the legacy era");
                // Only an answer says the server is legacy; a connection
                // that failed or timed out says nothing lasting.
                let definite = matches!(error, Error::Http { .. } | Error::Rpc { .. });
                return self.fall_back(definite).await;
            }
            self.forget_modern();
            return Err(error);
        }
    }

    /// The modern revision to retry in after a `-32022` that lists
    /// `supported`: the current one if listed, else the newest listed this
    /// client speaks (a pinned client: only its own).
    fn next_version(&self, supported: &[String], current: &str) -> Option<String> {
        let allowed = |v: &str| match &self.inner.options.protocol {
            ProtocolMode::Pinned(pinned) => v == pinned,
            _ => MODERN_PROTOCOL_VERSIONS.contains(&v),
        };
        if supported.iter().any(|v| v == current) && allowed(current) {
            return Some(current.to_string());
        }
        MODERN_PROTOCOL_VERSIONS
            .iter()
            .find(|v| allowed(v) && supported.iter().any(|s| s == *v))
            .map(|v| v.to_string())
    }

    /// Opens the `subscriptions/listen` stream for the change notifications
    /// in `filter`; they reach [`ClientEvent::Notification`].
    async fn listen(&self, filter: Map<String, Value>) {
        let Some(version) = self.inner.modern.read().clone() else {
            return;
        };
        let mut params = json!({"notifications": filter});
        self.envelope(&version).wrap(&mut params);
        let headers = modern::request_headers("subscriptions/listen", &params, &[]);
        self.inner.transport.listen_modern(params, headers).await;
    }

    /// Leaves the modern era (before a handshake or after a failed probe).
    fn forget_modern(&self) {
        *self.inner.modern.write() = None;
        *self.inner.protocol_version.write() = None;
    }

    /// The server is a legacy one: an `initialize` handshake. The verdict
    /// is kept for the URL only when `definite` (the server answered like
    /// a legacy one, rather than failing to answer).
    async fn fall_back(&self, definite: bool) -> Result<()> {
        self.forget_modern();
        self.inner.transport.reset_session();
        self.handshake().await?;
        if definite {
            self.remember(None);
        }
        Ok(())
    }

    /// Keeps what `server/discover` said.
    fn learn(&self, version: &str, result: Value) {
        let info = result["_meta"][META_SERVER_INFO].clone();
        let server_info = serde_json::from_value(info)
            .or_else(|_| serde_json::from_value(result["serverInfo"].clone()))
            .unwrap_or(Implementation {
                name: String::new(),
                version: String::new(),
                title: None,
            });
        *self.inner.server.write() = Some(ServerDetails {
            protocol_version: version.to_string(),
            capabilities: result["capabilities"].clone(),
            server_info,
            instructions: result["instructions"].as_str().map(str::to_string),
        });
    }

    /// What every modern request says about this client.
    fn envelope(&self, version: &str) -> Envelope {
        let options = &self.inner.options;
        let mut capabilities = options.capabilities.clone();
        if !capabilities.is_object() {
            capabilities = json!({});
        }
        if options.tasks {
            let extensions = capabilities
                .as_object_mut()
                .map(|c| c.entry("extensions").or_insert_with(|| json!({})));
            if let Some(Value::Object(extensions)) = extensions {
                extensions
                    .entry(TASKS_EXTENSION)
                    .or_insert_with(|| json!({}));
            }
        }
        Envelope {
            version: version.to_string(),
            client_info: serde_json::to_value(&options.client_info).unwrap_or(Value::Null),
            capabilities,
        }
    }

    /// Leaves out the tools whose `x-mcp-header` annotations are invalid,
    /// keeping the others' for `tools/call`.
    pub(super) fn keep_param_headers(&self, tools: Vec<Tool>) -> Vec<Tool> {
        let mut headers = HashMap::new();
        let kept = tools
            .into_iter()
            .filter(|tool| match modern::param_headers(&tool.input_schema) {
                Ok(found) => {
                    headers.insert(tool.name.clone(), found);
                    true
                }
                Err(reason) => {
                    tracing::warn!(tool = %tool.name, "left out of tools/list: {reason}");
                    false
                }
            })
            .collect();
        *self.inner.tool_headers.write() = headers;
        kept
    }

    /// One modern request, with the retries the era asks for: once more
    /// after a `-32022` that lists a revision this client may speak; once
    /// after refreshing the tools' headers on a `-32020` to `tools/call`;
    /// and, when its response stream broke, again as a new request (new id)
    /// up to `max_reconnects` times with backoff.
    pub(crate) async fn exchange(
        &self,
        method: &str,
        params: &Value,
        options: &RequestOptions,
    ) -> Result<Reply> {
        let deadline = Deadline::of(options, self.inner.options.request_timeout);
        let mut version_retried = false;
        loop {
            let error = match self.exchange_once(method, params, options, &deadline).await {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            let current = self.inner.modern.read().clone().unwrap_or_default();
            if let Some(refusal) = unsupported_version(&error)
                && !version_retried
                && let Some(next) =
                    self.next_version(&modern::supported_versions(refusal), &current)
            {
                version_retried = true;
                self.set_modern(&next).await;
                continue;
            }
            return Err(error);
        }
    }

    /// [`exchange`](Self::exchange) without the `-32022` retry; every
    /// attempt within `deadline`.
    async fn exchange_once(
        &self,
        method: &str,
        params: &Value,
        options: &RequestOptions,
        deadline: &Deadline,
    ) -> Result<Reply> {
        let mut headers_retried = false;
        let mut reissued = 0;
        let mut delays = backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(self.inner.options.min_backoff)
                .with_max_delay(self.inner.options.max_backoff)
                .with_jitter(),
        );
        loop {
            let Some(version) = self.inner.modern.read().clone() else {
                return Err(Error::Unsupported(format!(
                    "{method} in the legacy era (it needs revision 2026-07-28)"
                )));
            };
            let mut params = params.clone();
            self.envelope(&version).wrap(&mut params);
            let tool_headers = match params["name"].as_str() {
                Some(name) if method == "tools/call" => self
                    .inner
                    .tool_headers
                    .read()
                    .get(name)
                    .cloned()
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let headers = modern::request_headers(method, &params, &tool_headers);
            let bounded = deadline.bound(method, options)?;
            let error = match self
                .attempt::<_, Value>(method, &params, &bounded, true, headers)
                .await
            {
                Attempt::Answered(Ok(result)) => return modern::classify(method, result),
                Attempt::Answered(Err(e)) => e,
                Attempt::Broken(e) if reissued < self.inner.options.max_reconnects => {
                    reissued += 1;
                    let delay = delays.next().unwrap_or(self.inner.options.max_backoff);
                    tracing::debug!("{method}: the response stream broke ({e}); re-issuing it");
                    tokio::time::sleep_until(
                        (tokio::time::Instant::now() + delay).min(deadline.at),
                    )
                    .await;
                    continue;
                }
                Attempt::Broken(e) => return Err(e),
                Attempt::SessionGone { session, .. } => {
                    return Err(Error::SessionNotFound { session });
                }
            };
            if let Error::Rpc { error: refusal, .. } = &error
                && refusal.code == code::HEADER_MISMATCH
                && method == "tools/call"
                && !headers_retried
            {
                headers_retried = true;
                Box::pin(self.list_tools()).await?;
                continue;
            }
            return Err(error);
        }
    }

    /// A modern request to its final result: `input_required` rounds are
    /// answered by the application's handlers (at most `max_input_rounds`),
    /// a task is followed to its end.
    pub(super) async fn modern_value(
        &self,
        method: &str,
        mut params: Value,
        options: &RequestOptions,
    ) -> Result<Value> {
        if !params.is_object() {
            params = json!({});
        }
        let rounds = self.inner.options.max_input_rounds;
        for _ in 0..=rounds {
            match self.exchange(method, &params, options).await? {
                Reply::Complete(result) => return Ok(result),
                Reply::Task(created) if !method.starts_with("tasks/") => {
                    return self.follow_task(method, created, options).await;
                }
                Reply::Task(_) => {
                    return Err(Error::Protocol(format!("{method} answered with a task")));
                }
                Reply::InputRequired { requests, state } => {
                    let responses = self.answer_inputs(&requests).await?;
                    if let Some(p) = params.as_object_mut() {
                        p.insert("inputResponses".into(), Value::Object(responses));
                        match state {
                            Some(state) => p.insert("requestState".into(), state.into()),
                            None => p.remove("requestState"),
                        };
                    }
                }
            }
        }
        Err(Error::Protocol(format!(
            "{method} still asked for input after {rounds} rounds"
        )))
    }

    /// Answers the server's input requests through the application's
    /// request handler.
    pub(crate) async fn answer_inputs(
        &self,
        requests: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let mut responses = Map::new();
        for (key, request) in requests {
            let Some(kind) = request["method"].as_str() else {
                return Err(Error::Protocol(format!(
                    "the input request {key:?} has no method"
                )));
            };
            if !INPUT_KINDS.contains(&kind) {
                return Err(Error::Protocol(format!(
                    "the input request {key:?} is of an unknown kind {kind:?}"
                )));
            }
            let Some(handler) = self.inner.options.on_request.clone() else {
                return Err(Error::Unsupported(format!(
                    "{kind}, which the server asked for (input {key:?}): no request handler \
                     is set (ClientOptions::on_request)"
                )));
            };
            let params = request.get("params").cloned().unwrap_or_else(|| json!({}));
            match handler(kind.to_string(), params).await {
                Ok(response) => {
                    responses.insert(key.clone(), response);
                }
                Err(error) => {
                    return Err(Error::Input {
                        method: kind.to_string(),
                        error,
                    });
                }
            }
        }
        Ok(responses)
    }

    /// Hears what the client does on its own.
    pub(crate) fn emit(&self, event: ClientEvent) {
        self.inner.emit(event);
    }
}
