//! The MCP wire types shared by server and client: JSON-RPC 2.0 messages and
//! the MCP methods of the legacy (session) revisions. Pure data: parsing and
//! printing only.

mod jsonrpc;
mod mcp;

pub use jsonrpc::{
    ErrorObject, Message, Notification, ParseError, Request, RequestId, Response, code,
    parse_params, to_raw,
};
pub use mcp::*;
