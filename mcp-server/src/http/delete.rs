//! DELETE: a legacy client ends its session.

use std::future::Future;
use std::sync::Arc;

use axum::http;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use session_core::SessionId;

use super::headers::Head;
use super::{App, principal};
use crate::dispatch::session_of_stream;
use crate::error::Rejection;

/// The checks of a DELETE that need only its head. Returns the session it
/// names and the principal asking.
pub(super) fn head(
    app: &App,
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
) -> Result<(SessionId, Option<String>), Rejection> {
    let head = Head::scan(headers);
    app.guard.check(&head)?;
    let id = session_of_stream(
        head.session_id.map(super::post::text),
        head.protocol_version.map(super::post::text),
    )?;
    Ok((id, principal(extensions)))
}

/// A DELETE past [`head`]: ends the session. It passes the same checks as
/// any request of the session (another principal's session is unknown).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn's future holds its arguments twice"
)]
pub(super) fn delete(
    app: Arc<App>,
    id: SessionId,
    principal: Option<String>,
) -> impl Future<Output = Result<Response, Rejection>> + Send {
    async move {
        let session = app.dispatcher.session(&id, principal.as_deref()).await?;
        if !app.config.allow_delete {
            return Err(Rejection::MethodNotAllowed);
        }
        app.dispatcher.end_session(session).await?;
        Ok(StatusCode::OK.into_response())
    }
}
