//! The management API of the gateway under test. Every request goes through
//! [`Endpoints::request`] (the URL, the bearer [`TOKEN`], sending); `call` reads the answer
//! as JSON, and the named calls (`@connections`, groups, broadcast) say what they do in
//! one word: `gw.join("room", &id)` instead of a PUT to a path built by hand. Also
//! paginated listings, and `/metrics` with a parser for one sample.

use reqwest::Method;
use serde_json::Value;

use super::{Endpoints, Gateway, TOKEN};

impl Endpoints {
    /// `http://management/path`.
    pub fn management_url(&self, path: &str) -> String {
        format!("http://{}{}", self.management_addr, path)
    }

    /// An authenticated management request builder.
    pub fn management(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.management_url(path))
            .bearer_auth(TOKEN)
    }

    /// Sends an authenticated management request with `body`; returns the response (any
    /// status). The one place a management request is sent.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.management(method.clone(), path)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// An authenticated management call; returns the status and the body as JSON
    /// (`Null` when empty).
    pub async fn call(&self, method: Method, path: &str, body: &str) -> (u16, Value) {
        let r = self.request(method, path, body.to_owned()).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {text:?}: {e}"))
        };
        (status, value)
    }

    /// POST `body` to `@connections/{id}`; returns the status and the body text.
    pub async fn post(&self, id: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = self
            .request(Method::POST, &format!("/@connections/{id}"), body)
            .await;
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// GET `@connections/{id}`: the status and the description (`Null` when gone).
    pub async fn get_connection(&self, id: &str) -> (u16, Value) {
        self.call(Method::GET, &format!("/@connections/{id}"), "")
            .await
    }

    /// DELETE `@connections/{id}` (closes it with 1000): the status and the body.
    pub async fn delete_connection(&self, id: &str) -> (u16, Value) {
        self.call(Method::DELETE, &format!("/@connections/{id}"), "")
            .await
    }

    /// PUT `@groups/{group}/members/{id}` (joins): the status and the body.
    pub async fn join(&self, group: &str, id: &str) -> (u16, Value) {
        self.call(Method::PUT, &format!("/@groups/{group}/members/{id}"), "")
            .await
    }

    /// DELETE `@groups/{group}/members/{id}` (leaves): the status and the body.
    pub async fn leave(&self, group: &str, id: &str) -> (u16, Value) {
        self.call(
            Method::DELETE,
            &format!("/@groups/{group}/members/{id}"),
            "",
        )
        .await
    }

    /// POST `body` to `@groups/{group}` (to its members): the status and the body.
    pub async fn to_group(&self, group: &str, body: &str) -> (u16, Value) {
        self.call(Method::POST, &format!("/@groups/{group}"), body)
            .await
    }

    /// POST `body` to `@broadcast` (to every connection): the status and the body.
    pub async fn broadcast(&self, body: &str) -> (u16, Value) {
        self.call(Method::POST, "/@broadcast", body).await
    }

    /// Scrapes `/metrics`; returns the exposition text.
    pub async fn metrics(&self) -> String {
        let r = self.request(Method::GET, "/metrics", "").await;
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
            .call(Method::GET, &url, "")
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
