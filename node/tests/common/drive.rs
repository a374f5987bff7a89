//! One user of a node, for the drive tests (trash, shares): the requests they make with their
//! token, answered as (status, JSON body).

use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_raft::model::Tier;

use super::{json, Node};

pub struct User<'a> {
    pub n: &'a Node,
    pub t: String,
}

impl<'a> User<'a> {
    pub fn new(n: &'a Node, name: &str, tier: Tier) -> Self {
        User {
            n,
            t: n.token(name, tier),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        json(self.n.get(&self.t, path).send().await.unwrap()).await
    }

    pub async fn status(&self, path: &str) -> StatusCode {
        self.get(path).await.0
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        json(self.n.post(&self.t, path).json(&body).send().await.unwrap()).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.n.http.patch(self.n.url(path)).bearer_auth(&self.t);
        json(r.json(&body).send().await.unwrap()).await
    }

    pub async fn del(&self, path: &str) -> StatusCode {
        self.n.delete(&self.t, path).send().await.unwrap().status()
    }

    /// `POST /v1/files` into `folder` (`None`: the root): the new file's id.
    pub async fn put(&self, name: &str, folder: Option<&str>, data: &[u8]) -> String {
        let mut q = vec![("name", name)];
        if let Some(f) = folder {
            q.push(("folder", f));
        }
        let r = self.n.post(&self.t, "/v1/files").query(&q);
        let (st, f) = json(r.body(data.to_vec()).send().await.unwrap()).await;
        assert_eq!(st, StatusCode::CREATED, "{f}");
        f["id"].as_str().unwrap().to_string()
    }

    /// `PUT /v1/files/{id}/content`: a new version.
    pub async fn put_content(&self, file: &str, data: &[u8]) -> (StatusCode, Value) {
        let r = self.n.put(&self.t, &format!("/v1/files/{file}/content"));
        json(r.body(data.to_vec()).send().await.unwrap()).await
    }

    /// `GET /v1/files/{id}/content`: its status and bytes.
    pub async fn content(&self, file: &str) -> (StatusCode, Vec<u8>) {
        let path = format!("/v1/files/{file}/content");
        let r = self.n.get(&self.t, &path).send().await.unwrap();
        (r.status(), r.bytes().await.unwrap().to_vec())
    }

    /// A folder that must be made: its id.
    pub async fn mkdir(&self, name: &str, parent: Option<&str>) -> String {
        let body = json!({"name": name, "parent": parent});
        let (st, f) = self.post("/v1/folders", body).await;
        assert_eq!(st, StatusCode::CREATED, "{f}");
        f["id"].as_str().unwrap().to_string()
    }

    /// The names in a folder (`root` too), by name.
    pub async fn names(&self, folder: &str) -> Vec<String> {
        let (st, page) = self.get(&format!("/v1/folders/{folder}")).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// `GET /v1/trash`'s entries.
    pub async fn trash(&self) -> Vec<Value> {
        self.entries("/v1/trash").await
    }

    /// `GET /v1/shared-with-me`'s entries.
    pub async fn shared_with_me(&self) -> Vec<Value> {
        self.entries("/v1/shared-with-me").await
    }

    async fn entries(&self, path: &str) -> Vec<Value> {
        let (st, v) = self.get(path).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["entries"].as_array().unwrap().clone()
    }

    pub async fn used(&self) -> u64 {
        self.n.usage(&self.t).await["used"].as_u64().unwrap()
    }
}
