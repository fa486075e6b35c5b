//! Cluster-wide listings of connections and of a group's members, read from the records
//! ([`records`](super::records) writes them), and the listing cursors.
//!
//! Read-only: it never writes to Redis. A cursor is opaque to users: the scope it belongs
//! to (a node tag, or a group) and the last id listed, base64url-encoded. A cursor that
//! does not decode, or belongs to another scope, starts from the beginning.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::AsyncCommands as _;

use super::{Conn, RedisBackplane};
use crate::cluster::{ConnectionRecord, DeliveryError, GroupName, Page};

impl RedisBackplane {
    /// Every node's connections, node by node in tag order and by id within a node, a page
    /// of at most `limit` at a time. The cursor is the last (node, id) listed, so a page
    /// never repeats or skips a connection that lives through the whole listing.
    pub async fn list_connections(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConnectionRecord>, DeliveryError> {
        let mut conn = self.conn();
        let mut tags: Vec<String> = conn
            .zrange(self.keys.nodes(), 0, -1)
            .await
            .map_err(|_| DeliveryError::Unavailable)?;
        tags.sort();
        let (mut tag_index, mut after) = resume(&tags, cursor);
        // Up to limit + 1 (tag, id) pairs: the extra one says whether another page exists.
        let mut found: Vec<(usize, String)> = Vec::new();
        while tag_index < tags.len() && found.len() <= limit {
            let ids = lex_page(
                &mut conn,
                &self.keys.ids(&tags[tag_index]),
                after.take().as_deref(),
                limit + 1 - found.len(),
            )
            .await?;
            found.extend(ids.into_iter().map(|id| (tag_index, id)));
            tag_index += 1;
        }
        let more = found.len() > limit;
        found.truncate(limit);
        let cursor = found
            .last()
            .filter(|_| more)
            .map(|(t, id)| encode_cursor(&tags[*t], id));
        let mut items = Vec::with_capacity(found.len());
        for chunk in found.chunk_by(|a, b| a.0 == b.0) {
            let ids: Vec<&str> = chunk.iter().map(|(_, id)| id.as_str()).collect();
            let records: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(self.keys.conns(&tags[chunk[0].0]))
                .arg(&ids)
                .query_async(&mut conn)
                .await
                .map_err(|_| DeliveryError::Unavailable)?;
            items.extend(
                records
                    .iter()
                    .flatten()
                    .filter_map(|json| serde_json::from_str(json).ok()),
            );
        }
        Ok(Page { items, cursor })
    }

    /// A group's members across the cluster, by id, a page of at most `limit` at a time.
    pub async fn list_members(
        &self,
        group: &GroupName,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>, DeliveryError> {
        let mut conn = self.conn();
        let after = cursor
            .and_then(decode_cursor)
            .filter(|(g, _)| g == group.as_str())
            .map(|(_, last)| last);
        let mut items = lex_page(
            &mut conn,
            &self.keys.members(group.as_str()),
            after.as_deref(),
            limit + 1,
        )
        .await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let cursor = items
            .last()
            .filter(|_| more)
            .map(|last| encode_cursor(group.as_str(), last));
        Ok(Page { items, cursor })
    }
}

/// Where a connection listing resumes among the sorted node `tags`: the index of the first
/// node to read, and the id to read after within it. After the cursor's node that node
/// again; when that node has died since, the next one from its start.
fn resume(tags: &[String], cursor: Option<&str>) -> (usize, Option<String>) {
    match cursor.and_then(decode_cursor) {
        Some((tag, last)) => {
            let index = tags.iter().position(|t| *t >= tag).unwrap_or(tags.len());
            // Resume after `last` only within the same node (it may have died since).
            let after = (tags.get(index) == Some(&tag)).then_some(last);
            (index, after)
        }
        None => (0, None),
    }
}

/// Up to `count` members of the sorted set `key` (all scores 0, so ordered by member) that
/// come after `after`, or from the start.
async fn lex_page(
    conn: &mut Conn,
    key: &str,
    after: Option<&str>,
    count: usize,
) -> Result<Vec<String>, DeliveryError> {
    let min = after.map_or_else(|| "-".to_owned(), |last| format!("({last}"));
    redis::cmd("ZRANGEBYLEX")
        .arg(key)
        .arg(min)
        .arg("+")
        .arg("LIMIT")
        .arg(0)
        .arg(count)
        .query_async(conn)
        .await
        .map_err(|_| DeliveryError::Unavailable)
}

/// A listing cursor: the scope (node tag or group) and the last id listed, opaque to users.
fn encode_cursor(scope: &str, last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{scope}\t{last}"))
}

/// The scope and last id of a cursor; `None` for anything [`encode_cursor`] did not make.
fn decode_cursor(cursor: &str) -> Option<(String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (scope, last) = text.split_once('\t')?;
    Some((scope.to_owned(), last.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let table = [
            ("0a0b0c0d", "AAAAAAAAAAAAAAAA"),
            ("room-1.a:b@c_d", "Zm9vYmFyYmF6cXV4"),
            ("g", ""),
        ];
        for (scope, last) in table {
            let cursor = encode_cursor(scope, last);
            assert!(
                cursor
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{cursor} is not URL-safe"
            );
            assert_eq!(
                decode_cursor(&cursor),
                Some((scope.to_owned(), last.to_owned()))
            );
        }
    }

    #[test]
    fn garbage_cursors_decode_to_nothing() {
        let no_tab = URL_SAFE_NO_PAD.encode("scope-without-a-tab");
        let not_utf8 = URL_SAFE_NO_PAD.encode([0xff, 0xfe, b'\t', b'x']);
        let padded = format!("{}=", URL_SAFE_NO_PAD.encode("a\tb"));
        for garbage in ["", "!!!", "a b", "a+b/", &no_tab, &not_utf8, &padded] {
            assert_eq!(decode_cursor(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn a_connection_listing_resumes_where_it_stopped() {
        let tags: Vec<String> = ["0a", "1b", "2c"].map(String::from).to_vec();
        let at = |tag: &str, last: &str| Some(encode_cursor(tag, last));
        let table = [
            // (cursor, first node to read, read after)
            (None, 0, None),
            (Some("garbage".to_owned()), 0, None),
            (at("0a", "X"), 0, Some("X")),
            (at("1b", "Y"), 1, Some("Y")),
            (at("2c", "Z"), 2, Some("Z")),
            (at("1a", "Y"), 1, None), // its node died: the next node, from its start
            (at("3d", "Y"), 3, None), // past the last node: an empty page
        ];
        for (cursor, index, after) in table {
            assert_eq!(
                resume(&tags, cursor.as_deref()),
                (index, after.map(str::to_owned)),
                "{cursor:?}"
            );
        }
    }
}
