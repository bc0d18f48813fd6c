//! The typed methods of [`Client`]: tools, resources, prompts, `ping`,
//! the session-state extension, every list followed through its pages.

use super::*;

impl Client {
    /// Every item of a paginated list, following `nextCursor`.
    async fn all_pages<Page, T>(
        &self,
        method: &str,
        split: impl Fn(Page) -> (Vec<T>, Option<String>),
    ) -> Result<Vec<T>>
    where
        Page: DeserializeOwned,
    {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen = HashSet::new();
        loop {
            let params = match &cursor {
                Some(cursor) => json!({"cursor": cursor}),
                None => json!({}),
            };
            let page: Page = self
                .request(method, &params, RequestOptions::default())
                .await?;
            let (mut more, next) = split(page);
            items.append(&mut more);
            match next {
                None => return Ok(items),
                Some(next) if !seen.insert(next.clone()) => {
                    return Err(Error::Protocol(format!(
                        "{method} answered with the cursor {next:?} a second time"
                    )));
                }
                Some(next) => cursor = Some(next),
            }
        }
    }

    /// `ping`.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn ping(&self) -> Result<()> {
        let _: Value = self
            .request("ping", &json!({}), RequestOptions::default())
            .await?;
        Ok(())
    }

    /// Every tool the server offers (all pages).
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request); [`Error::Protocol`] if the server
    /// repeats a cursor.
    ///
    /// In the 2026-07-28 era over HTTP, a tool whose `x-mcp-header`
    /// annotations break the rules is left out (with a warning in the log),
    /// and the others' annotations are kept to mirror their parameters into
    /// `Mcp-Param-*` headers on `tools/call`.
    pub async fn list_tools(&self) -> Result<Vec<Tool>> {
        let tools = self
            .all_pages("tools/list", |page: ListToolsResult| {
                (page.tools, page.next_cursor)
            })
            .await?;
        if self.inner.modern.read().is_none() {
            return Ok(tools);
        }
        Ok(self.keep_param_headers(tools))
    }

    /// Calls a tool.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request). A tool that fails returns `Ok` with
    /// `is_error: Some(true)`.
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Result<CallToolResult> {
        self.call_tool_with(name, arguments, RequestOptions::default())
            .await
    }

    /// Calls a tool with per-request options (timeout, progress).
    ///
    /// # Errors
    ///
    /// As [`call_tool`](Self::call_tool).
    pub async fn call_tool_with(
        &self,
        name: &str,
        arguments: Value,
        options: RequestOptions,
    ) -> Result<CallToolResult> {
        self.request(
            "tools/call",
            &json!({"name": name, "arguments": arguments}),
            options,
        )
        .await
    }

    /// Every resource the server offers (all pages).
    ///
    /// # Errors
    ///
    /// As [`list_tools`](Self::list_tools).
    pub async fn list_resources(&self) -> Result<Vec<Resource>> {
        self.all_pages("resources/list", |page: ListResourcesResult| {
            (page.resources, page.next_cursor)
        })
        .await
    }

    /// Reads a resource.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult> {
        self.request(
            "resources/read",
            &json!({"uri": uri}),
            RequestOptions::default(),
        )
        .await
    }

    /// Every prompt the server offers (all pages).
    ///
    /// # Errors
    ///
    /// As [`list_tools`](Self::list_tools).
    pub async fn list_prompts(&self) -> Result<Vec<Prompt>> {
        self.all_pages("prompts/list", |page: ListPromptsResult| {
            (page.prompts, page.next_cursor)
        })
        .await
    }

    /// Gets a prompt.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn get_prompt(
        &self,
        name: &str,
        arguments: Map<String, Value>,
    ) -> Result<GetPromptResult> {
        self.request(
            "prompts/get",
            &json!({"name": name, "arguments": arguments}),
            RequestOptions::default(),
        )
        .await
    }

    fn check_session_state(&self) -> Result<()> {
        // Unknown capabilities (a resumed session): try, the server says.
        let Some(server) = self.server() else {
            return Ok(());
        };
        if server.capabilities["experimental"][SESSION_STATE_CAPABILITY].is_object() {
            Ok(())
        } else {
            Err(Error::Unsupported(
                "the session-state extension (session/get)".into(),
            ))
        }
    }

    /// The session's state, through the server's session-state extension.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if the server does not advertise
    /// `capabilities.experimental.sessionState`; as
    /// [`request`](Self::request).
    pub async fn session_state(&self) -> Result<SessionStateResult> {
        self.check_session_state()?;
        self.request("session/get", &json!({}), RequestOptions::default())
            .await
    }

    /// Merges `patch` into the session's state (a `null` removes a key).
    ///
    /// # Errors
    ///
    /// As [`session_state`](Self::session_state).
    pub async fn update_session_state(
        &self,
        patch: Map<String, Value>,
    ) -> Result<SessionStateResult> {
        self.check_session_state()?;
        self.request(
            "session/update",
            &json!({"state": patch}),
            RequestOptions::default(),
        )
        .await
    }
}
