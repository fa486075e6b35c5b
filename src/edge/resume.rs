//! The edge's part of resumable sessions (docs/resume.md): the resume parameters of a
//! handshake (`sb_resume=<token>&sb_offset=<n>`, taken out of the query the backend sees)
//! and the greeting a resumable session's socket starts with — the welcome frame, then
//! the frames a resume replays.

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

use crate::api::Api;
use crate::connections::ConnShared;
pub use crate::connections::resume::SUBPROTOCOL;
use crate::connections::resume::{Refusal, Token, welcome};
use crate::state::AppState;

/// The query parameter carrying the resume token.
const TOKEN_PARAM: &str = "sb_resume";
/// The query parameter carrying the last offset the client processed.
const OFFSET_PARAM: &str = "sb_offset";

/// How long a resume waits, beyond a write's grace, for the socket still holding its
/// session to let go.
pub const TAKEOVER_SLACK: Duration = Duration::from_secs(2);

/// What a resumable handshake asked for.
#[derive(Debug)]
pub struct Ask {
    /// The token, when the client is resuming (`Err` when it does not parse).
    token: Option<Result<Token, Refusal>>,
    /// The last offset the client processed (`Err` when it does not parse).
    offset: Result<u64, Refusal>,
}

impl Ask {
    /// Takes the resume parameters out of `query` (the rest reach the authorizer and
    /// `$connect` untouched).
    pub fn take(query: &mut Vec<(String, String)>) -> Self {
        let mut ask = Self {
            token: None,
            offset: Ok(0),
        };
        query.retain(|(key, value)| match key.as_str() {
            TOKEN_PARAM => {
                ask.token = Some(Token::parse(value).ok_or(Refusal::BadToken));
                false
            }
            OFFSET_PARAM => {
                ask.offset = value.parse().map_err(|_| Refusal::BadOffset);
                false
            }
            _ => true,
        });
        ask
    }

    /// The connection this handshake resumes, with the offset to replay after: `None` for
    /// a first connect, `Err` when the resume cannot be served (the client starts fresh).
    pub async fn find(
        &self,
        state: &Arc<AppState>,
    ) -> Result<Option<(Arc<ConnShared>, u64)>, Refusal> {
        let Some(token) = &self.token else {
            return Ok(None);
        };
        let token = token.as_ref().map_err(|r| *r)?;
        let offset = self.offset?;
        let shared = state.find_resumable(token, offset).await?;
        Ok(Some((shared, offset)))
    }
}

/// What a resumable session writes before anything else.
pub fn greeting(
    shared: &ConnShared,
    api: &Api,
    resumed: bool,
    offset: u64,
    refusal: Option<Refusal>,
    replay: Vec<Message>,
) -> Box<super::session::Greeting> {
    let id = &shared.info.id_text;
    let token = shared
        .resume
        .as_deref()
        .map(|r| r.token(id))
        .unwrap_or_default();
    Box::new(super::session::Greeting {
        welcome: welcome(id, &token, resumed, offset, api.resume.window_secs, refusal),
        replay,
        resumed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_parameters_leave_the_query() {
        let mut query = vec![
            ("token".to_owned(), "jwt".to_owned()),
            ("sb_resume".to_owned(), "nonsense".to_owned()),
            ("sb_offset".to_owned(), "12".to_owned()),
        ];
        let ask = Ask::take(&mut query);
        assert_eq!(query, vec![("token".to_owned(), "jwt".to_owned())]);
        assert_eq!(ask.offset, Ok(12));
        assert!(matches!(ask.token, Some(Err(Refusal::BadToken))));
        let mut query = vec![("sb_offset".to_owned(), "-1".to_owned())];
        assert_eq!(Ask::take(&mut query).offset, Err(Refusal::BadOffset));
    }
}
