//! The management API of the gateway under test, called with the bearer [`TOKEN`]: the
//! request builder every call goes through, `@connections` POST, JSON calls, paginated
//! listings, and `/metrics` with a parser for one sample.

use serde_json::Value;

use super::{Gateway, TOKEN};

impl Gateway {
    /// `http://management/path`.
    pub fn management_url(&self, path: &str) -> String {
        format!("http://{}{}", self.management_addr, path)
    }

    /// An authenticated management request builder.
    pub fn management(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.management_url(path))
            .bearer_auth(TOKEN)
    }

    /// POST `body` to `@connections/{id}`; returns the status and the body text.
    pub async fn post(&self, id: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = self
            .management(reqwest::Method::POST, &format!("/@connections/{id}"))
            .body(body)
            .send()
            .await
            .expect("post");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// An authenticated management call; returns the status and the body as JSON
    /// (`Null` when empty).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .management(method, path)
            .body(body.to_owned())
            .send()
            .await
            .expect("management call");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {text:?}: {e}"))
        };
        (status, value)
    }

    /// Scrapes `/metrics`; returns the exposition text.
    pub async fn metrics(&self) -> String {
        let r = self
            .management(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .expect("metrics");
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }
}

/// Follows a paginated listing (`path` must already carry `?limit=…`), asking the gateways
/// in turn (page 1 from the first, page 2 from the second, …); returns each page's ids
/// (`members` are ids; `connections` entries give their `connectionId`).
pub async fn list_pages(gateways: &[&Gateway], path: &str, field: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..200 {
        let url = match &cursor {
            Some(c) => format!(
                "{path}&cursor={}",
                url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
            ),
            None => path.to_owned(),
        };
        let (status, v) = gateways[page % gateways.len()]
            .call(reqwest::Method::GET, &url, "")
            .await;
        assert_eq!(status, 200, "{url}: {v}");
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("a listing is an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = ["cursor", field];
        want.sort_unstable();
        assert_eq!(keys, want, "{v}");
        out.push(
            v[field]
                .as_array()
                .expect("items")
                .iter()
                .map(|item| match item {
                    Value::String(id) => id.clone(),
                    entry => entry["connectionId"]
                        .as_str()
                        .expect("connectionId")
                        .to_owned(),
                })
                .collect(),
        );
        match &v["cursor"] {
            Value::Null => return out,
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("cursor is {other}"),
        }
    }
    panic!("listing {path} never ended");
}

/// The value of the first sample of `name` whose labels contain every `label="value"` in
/// `labels` (0 when there is none).
pub fn sample(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}
