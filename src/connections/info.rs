//! What the gateway knows about a connection from its handshake, and the identity an
//! authorizer gave it: fixed for the connection's lifetime, carried by every event.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::ConnectionId;

/// What the gateway knows about a connection from its handshake; fixed for its lifetime.
#[derive(Debug)]
pub struct ConnInfo {
    /// The connection's id.
    pub id: ConnectionId,
    /// The id's text form, computed once because every event carries it.
    pub id_text: String,
    /// Epoch milliseconds of the handshake (`requestContext.connectedAt`).
    pub connected_at_ms: i64,
    /// The client's address (`identity.sourceIp`).
    pub source_ip: IpAddr,
    /// The handshake's `User-Agent`, if it had one (`identity.userAgent`).
    pub user_agent: Option<String>,
    /// The stage from the handshake path.
    pub stage: Arc<str>,
    /// `client.public_host`, else the handshake's `Host` header (`requestContext.domainName`).
    pub domain_name: String,
    /// What the authorizer said (`requestContext.authorizer` on every event); `None`
    /// without an authorizer.
    pub authorizer: Option<Arc<AuthorizerContext>>,
    /// The W3C trace id of every call made for the connection (`traceparent`).
    pub trace_id: super::TraceId,
}

/// What an authorizer said about a connection: `principalId` and a context whose values
/// are strings (numbers and booleans stringified, as AWS does). Fixed for the connection's
/// lifetime; serialised flat, as `requestContext.authorizer` is:
/// `{"principalId": "user-1", "tenant": "acme"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerContext {
    /// The principal the authorizer named, if it named one.
    pub principal_id: Option<String>,
    /// Context entries (a `principalId` entry here is ignored in favour of the field).
    pub context: BTreeMap<String, String>,
}

impl Serialize for AuthorizerContext {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(principal) = &self.principal_id {
            map.serialize_entry("principalId", principal)?;
        }
        for (key, value) in &self.context {
            if key != "principalId" {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for AuthorizerContext {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut context = BTreeMap::<String, String>::deserialize(deserializer)?;
        let principal_id = context.remove("principalId");
        Ok(Self {
            principal_id,
            context,
        })
    }
}
