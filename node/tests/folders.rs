//! Folders: per-user trees under an implicit `root`; names unique within a folder (files and
//! folders alike, with a "name (1).ext" rename policy), listings paged by name or by date,
//! moves that refuse cycles, deletes that move a folder with all in it to the trash; another
//! user's are 404.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};
use wharf_raft::model::Tier;

/// A well-formed id that names nothing (a malformed one could be refused for its form alone).
const MISSING: &str = "00000000-0000-7000-8000-000000000000";

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

fn names(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

/// PATCH bodies: a move, a rename.
fn to(parent: &str) -> Value {
    json!({ "parent": parent })
}

fn named(name: &str) -> Value {
    json!({ "name": name })
}

/// An error answer, with the status its code always comes with.
fn refused(got: &(StatusCode, Value), code: &str) {
    let status = match code {
        "invalid_name" => 400,
        "not_found" => 404,
        _ => 409, // name_taken, folder_cycle
    };
    assert_error(got, status, code);
}

/// One user of the node: the requests these tests make, with the user's token.
struct User<'a> {
    n: &'a Node,
    t: String,
}

fn user<'a>(n: &'a Node, name: &str) -> User<'a> {
    User {
        n,
        t: n.token(name, Tier::Basic),
    }
}

impl User<'_> {
    /// `POST /v1/folders`; a created folder's `Location` is checked on every call.
    async fn post_folder(&self, body: Value) -> (StatusCode, Value) {
        let r = self.n.post(&self.t, "/v1/folders").json(&body);
        let r = r.send().await.unwrap();
        let location = r.headers().get("location").cloned();
        let got = json(r).await;
        if got.0 == StatusCode::CREATED {
            let want = format!("/v1/folders/{}", id(&got.1));
            assert_eq!(location.expect("a Location"), want.as_str(), "{}", got.1);
        }
        got
    }

    /// `parent` "root": the field left out (the root by default); `null` is tried elsewhere.
    async fn mkdir(&self, name: &str, parent: &str) -> (StatusCode, Value) {
        let mut body = json!({"name": name});
        if parent != "root" {
            body["parent"] = json!(parent);
        }
        self.post_folder(body).await
    }

    /// A folder that must be made: its id.
    async fn must_mkdir(&self, name: &str, parent: &str) -> String {
        let (st, f) = self.mkdir(name, parent).await;
        assert_eq!(st, StatusCode::CREATED, "{name}: {f}");
        id(&f)
    }

    fn patch_req(&self, path: &str, body: Value) -> RequestBuilder {
        let r = self.n.http.patch(self.n.url(path));
        r.bearer_auth(&self.t).json(&body)
    }

    async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        json(self.patch_req(path, body).send().await.unwrap()).await
    }

    /// A PATCH that must be refused with `code`.
    async fn patch_fails(&self, path: &str, body: Value, code: &str) {
        refused(&self.patch(path, body).await, code);
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        json(self.n.get(&self.t, path).send().await.unwrap()).await
    }

    async fn del(&self, path: &str) -> (StatusCode, Value) {
        json(self.n.delete(&self.t, path).send().await.unwrap()).await
    }

    async fn page(&self, folder: &str, q: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self.n.get(&self.t, &format!("/v1/folders/{folder}"));
        json(r.query(q).send().await.unwrap()).await
    }

    /// Every entry of a folder, following `next_cursor` until it is null.
    async fn list_all(&self, folder: &str, sort: Option<&str>, limit: usize) -> Vec<Value> {
        let limit_s = limit.to_string();
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let (st, page) = {
                let mut q = vec![("limit", limit_s.as_str())];
                if let Some(s) = sort {
                    q.push(("sort", s));
                }
                if let Some(c) = &cursor {
                    q.push(("cursor", c.as_str()));
                }
                self.page(folder, &q).await
            };
            assert_eq!(st, StatusCode::OK, "{page}");
            let entries = page["entries"].as_array().expect("entries");
            assert!(entries.len() <= limit, "a page over its limit: {page}");
            out.extend(entries.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => {
                    assert!(page["next_cursor"].is_null(), "{page}");
                    return out;
                }
            }
        }
        panic!("a listing of more than 100 pages: the cursor does not advance")
    }

    /// The names in a folder, by name.
    async fn ls(&self, folder: &str) -> Vec<String> {
        names(&self.list_all(folder, None, 1000).await)
    }

    /// A one-request upload (`POST /v1/files`, raw body); `folder` "root": none given.
    async fn put_small(
        &self,
        name: &str,
        folder: &str,
        rename: bool,
        data: &[u8],
    ) -> (StatusCode, Value) {
        let mut q = vec![("name", name)];
        if folder != "root" {
            q.push(("folder", folder));
        }
        if rename {
            q.push(("on_conflict", "rename"));
        }
        let r = self.n.post(&self.t, "/v1/files").query(&q);
        json(r.body(data.to_vec()).send().await.unwrap()).await
    }

    /// A multi-step upload (as `Node::upload`, plus `folder` and `on_conflict`): the refused
    /// create's answer, or the completed file's. Callers pass bytes of their own, so that no
    /// dedup answers the create.
    async fn upload_into(
        &self,
        name: &str,
        folder: &str,
        rename: bool,
        data: &[u8],
    ) -> (StatusCode, Value) {
        let mut body = json!({
            "name": name,
            "size": data.len(),
            "blake3": blake3::hash(data).to_hex().to_string(),
        });
        if folder != "root" {
            body["folder"] = json!(folder);
        }
        if rename {
            body["on_conflict"] = json!("rename");
        }
        let (st, up) = self.n.create(&self.t, body).await;
        if st != StatusCode::CREATED {
            return (st, up);
        }
        let upload = up["upload_id"].as_str().unwrap().to_string();
        let cs = up["chunk_size"].as_u64().unwrap() as usize;
        for (i, c) in data.chunks(cs).enumerate() {
            let st = self.n.put_chunk(&self.t, &upload, i, c).await;
            assert_eq!(st, StatusCode::NO_CONTENT);
        }
        self.n.complete(&self.t, &upload).await
    }
}

#[tokio::test]
async fn folders_nest_list_and_keep_names_unique() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let ann = user(&node, "ann");

    // An explicit null parent is the root.
    let body = json!({"name": "docs", "parent": null});
    let (st, made) = ann.post_folder(body).await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    assert_eq!(made["name"], "docs");
    assert!(made["parent"].is_null(), "{made}");
    assert!(!made["created_at"].is_null(), "{made}");
    let docs = id(&made);
    let (st, year) = ann.mkdir("2026", &docs).await;
    assert_eq!(st, StatusCode::CREATED, "{year}");
    assert_eq!(year["parent"], docs.as_str());
    let readme = node.upload(&ann.t, "readme.txt", b"read me").await;
    assert!(readme["folder"].is_null(), "{readme}");

    // The root: a folder of its own, listing folders and files together, by name.
    let (st, root) = ann.page("root", &[]).await;
    assert_eq!(st, StatusCode::OK, "{root}");
    assert_eq!(root["folder"]["id"], "root");
    assert_eq!(root["folder"]["name"], "");
    assert!(root["folder"]["parent"].is_null(), "{root}");
    assert!(root["next_cursor"].is_null(), "{root}");
    let entries = root["entries"].as_array().unwrap();
    assert_eq!(names(entries), ["docs", "readme.txt"], "{root}");
    assert_eq!(entries[0]["kind"], "folder");
    assert_eq!(entries[0]["id"], docs.as_str());
    assert_eq!(entries[1]["kind"], "file");
    assert_eq!(entries[1]["id"], id(&readme).as_str());
    let (st, listed) = ann.page(&docs, &[]).await;
    assert_eq!(st, StatusCode::OK, "{listed}");
    assert_eq!(listed["folder"]["id"], docs.as_str());
    assert_eq!(listed["folder"]["name"], "docs");
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(names(entries), ["2026"], "{listed}");
    assert_eq!(entries[0]["parent"], docs.as_str());

    // Files into docs, by both upload paths; the record names its folder.
    let data = random_bytes(3000, 2);
    let (st, notes) = ann.upload_into("notes.txt", &docs, false, &data).await;
    assert_eq!(st, StatusCode::OK, "{notes}");
    assert_eq!(notes["folder"], docs.as_str());
    let (st, plan) = ann.put_small("plan.pdf", &docs, false, b"plan").await;
    assert_eq!(st, StatusCode::CREATED, "{plan}");
    assert_eq!(plan["folder"], docs.as_str());
    let (_, got) = ann.get(&format!("/v1/files/{}", id(&plan))).await;
    assert_eq!(got["folder"], docs.as_str(), "{got}");

    // A taken name, whichever kind holds it, is refused at create time (no bytes sent).
    refused(&ann.mkdir("2026", &docs).await, "name_taken");
    refused(&ann.mkdir("plan.pdf", &docs).await, "name_taken");
    let fresh = random_bytes(2000, 3);
    let got = ann.upload_into("plan.pdf", &docs, false, &fresh).await;
    refused(&got, "name_taken");
    let got = ann.upload_into("2026", &docs, false, &fresh).await;
    refused(&got, "name_taken");
    let got = ann.put_small("notes.txt", &docs, false, b"x").await;
    refused(&got, "name_taken");
    assert_eq!(node.usage(&ann.t).await["reserved"], 0);
    // Names are unique per folder only.
    let (st, other) = ann.put_small("plan.pdf", "root", false, b"root plan").await;
    assert_eq!(st, StatusCode::CREATED, "{other}");
    assert!(other["folder"].is_null(), "{other}");

    // The rename policy: "name (1)", then "(2)", before the extension.
    let renamed = json!({"name": "2026", "parent": docs, "on_conflict": "rename"});
    for want in ["2026 (1)", "2026 (2)"] {
        let (st, f) = ann.post_folder(renamed.clone()).await;
        assert_eq!(st, StatusCode::CREATED, "{f}");
        assert_eq!(f["name"], want);
    }
    let (st, f) = ann.put_small("plan.pdf", &docs, true, b"p1").await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    assert_eq!(f["name"], "plan (1).pdf");
    let data = random_bytes(900, 4);
    let (st, f) = ann.upload_into("plan.pdf", &docs, true, &data).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!(f["name"], "plan (2).pdf");
    assert_eq!(f["folder"], docs.as_str());
    let data = random_bytes(900, 5);
    let (st, f) = ann.upload_into("notes.txt", &docs, true, &data).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!(f["name"], "notes (1).txt");
    // By name: byte order, so " (1)" comes before ".".
    let want = "2026|2026 (1)|2026 (2)|notes (1).txt|notes.txt|plan (1).pdf|plan (2).pdf|plan.pdf";
    assert_eq!(ann.ls(&docs).await.join("|"), want);

    // Names that are no names; 255 bytes is still one.
    let long = "a".repeat(256);
    let mut bad = vec!["", "a/b", ".", "..", "a\0b", "../../etc/passwd"];
    bad.push(&long);
    for name in bad {
        refused(&ann.mkdir(name, "root").await, "invalid_name");
    }
    ann.must_mkdir(&"a".repeat(255), "root").await;

    // An unknown folder: nothing to create in, nothing to upload into.
    refused(&ann.mkdir("x", MISSING).await, "not_found");
    let got = ann.put_small("x", MISSING, false, b"x").await;
    refused(&got, "not_found");
    let got = ann.upload_into("x", MISSING, false, &fresh).await;
    refused(&got, "not_found");
}

#[tokio::test]
async fn moving_renaming_and_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let ann = user(&node, "ann");
    let a = ann.must_mkdir("a", "root").await;
    let b = ann.must_mkdir("b", "root").await;
    let (fa, fb) = (format!("/v1/folders/{a}"), format!("/v1/folders/{b}"));

    let (st, f) = ann.patch(&fa, named("alpha")).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!((&f["id"], &f["name"]), (&json!(a), &json!("alpha")));
    assert!(f["parent"].is_null(), "{f}");
    let (st, f) = ann.patch(&fa, to(&b)).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!(f["parent"], b.as_str());
    assert_eq!(ann.ls("root").await, ["b"]);
    assert_eq!(ann.ls(&b).await, ["alpha"]);

    // No folder goes under itself or anything under it.
    let c = ann.must_mkdir("c", &a).await;
    ann.patch_fails(&fb, to(&a), "folder_cycle").await;
    ann.patch_fails(&fb, to(&c), "folder_cycle").await;
    ann.patch_fails(&fa, to(&a), "folder_cycle").await;
    ann.patch_fails(&fb, to(&b), "folder_cycle").await;

    // Unknown ids, bad names, and the root itself.
    ann.patch_fails(&fa, to(MISSING), "not_found").await;
    let missing = format!("/v1/folders/{MISSING}");
    ann.patch_fails(&missing, named("x"), "not_found").await;
    ann.patch_fails(&fa, named("x/y"), "invalid_name").await;
    ann.patch_fails(&fa, named(".."), "invalid_name").await;
    let r = ann.patch_req("/v1/folders/root", named("x"));
    assert_eq!(r.send().await.unwrap().status(), StatusCode::BAD_REQUEST);

    // A move frees the old name; a clash where it lands is refused, for a move and a rename.
    ann.must_mkdir("alpha", "root").await;
    ann.patch_fails(&fa, to("root"), "name_taken").await;
    let other = ann.must_mkdir("other", &b).await;
    let fo = format!("/v1/folders/{other}");
    ann.patch_fails(&fo, named("alpha"), "name_taken").await;
    // Rename and move at once, to the root by "root"; then to the root by null.
    let both = json!({"name": "alpha2", "parent": "root"});
    let (st, f) = ann.patch(&fa, both).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!(f["name"], "alpha2");
    assert!(f["parent"].is_null(), "{f}");
    let fc = format!("/v1/folders/{c}");
    let (st, f) = ann.patch(&fc, json!({ "parent": null })).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert!(f["parent"].is_null(), "{f}");
    assert_eq!(ann.ls("root").await, ["alpha", "alpha2", "b", "c"]);

    // Files move between folders; both listings and the record follow.
    let (st, file) = ann.put_small("f.txt", &b, false, b"f").await;
    assert_eq!(st, StatusCode::CREATED, "{file}");
    let ff = format!("/v1/files/{}", id(&file));
    let (st, moved) = ann.patch(&ff, to(&a)).await;
    assert_eq!(st, StatusCode::OK, "{moved}");
    assert_eq!(moved["folder"], a.as_str());
    assert_eq!(moved["name"], "f.txt");
    assert_eq!(ann.ls(&b).await, ["other"]);
    let in_a = ann.list_all(&a, None, 100).await;
    assert_eq!(names(&in_a), ["f.txt"]);
    assert_eq!(in_a[0]["kind"], "file");
    let (_, got) = ann.get(&ff).await;
    assert_eq!(got["folder"], a.as_str(), "{got}");

    // Clashes on a file's move or rename; a missing target.
    let (st, again) = ann.put_small("f.txt", &b, false, b"f2").await;
    assert_eq!(st, StatusCode::CREATED, "the move freed the name: {again}");
    let fg = format!("/v1/files/{}", id(&again));
    ann.patch_fails(&fg, to(&a), "name_taken").await;
    ann.patch_fails(&fg, named("other"), "name_taken").await;
    ann.patch_fails(&fg, to(MISSING), "not_found").await;
    let (st, g) = ann.patch(&fg, named("g.txt")).await;
    assert_eq!(st, StatusCode::OK, "{g}");
    assert_eq!((&g["name"], &g["folder"]), (&json!("g.txt"), &json!(b)));

    // To the root.
    let (st, moved) = ann.patch(&ff, to("root")).await;
    assert_eq!(st, StatusCode::OK, "{moved}");
    assert!(moved["folder"].is_null(), "{moved}");
    assert!(ann.ls(&a).await.is_empty());
    let root = ann.ls("root").await;
    assert_eq!(root, ["alpha", "alpha2", "b", "c", "f.txt"]);
}

#[tokio::test]
async fn pages_and_sorting() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let ann = user(&node, "ann");
    let boxed = ann.must_mkdir("box", "root").await;

    // 25 entries, 10 folders and 15 files, made in an order unlike their names' (which mix
    // cases and `_`, so that byte order is not case-insensitive order).
    let letters = ["b", "A", "a", "_", "B"];
    let mut by_date = Vec::new();
    let mut kind_of = HashMap::new();
    for i in 0..25 {
        let stem = format!("{}{:02}", letters[i / 5], (i * 7) % 25);
        let (name, kind) = if i % 5 == 0 || i % 5 == 3 {
            ann.must_mkdir(&stem, &boxed).await;
            (stem, ("folder", "parent"))
        } else {
            let name = format!("{stem}.bin");
            let data = random_bytes(10 + i, i as u64);
            let (st, f) = ann.put_small(&name, &boxed, false, &data).await;
            assert_eq!(st, StatusCode::CREATED, "{f}");
            (name, ("file", "folder"))
        };
        kind_of.insert(name.clone(), kind);
        by_date.push(name);
    }
    let mut by_name = by_date.clone();
    by_name.sort(); // `String`'s order is byte order
    assert_ne!(by_name, by_date);

    for (sort, want) in [("name", &by_name), ("date", &by_date)] {
        let entries = ann.list_all(&boxed, Some(sort), 7).await;
        assert_eq!(&names(&entries), want, "sort={sort}");
        let ids: HashSet<String> = entries.iter().map(id).collect();
        assert_eq!(ids.len(), 25, "sort={sort}: an entry twice");
        for e in &entries {
            // A folder names where it is in `parent`, a file in `folder`.
            let (kind, up) = kind_of[e["name"].as_str().unwrap()];
            assert_eq!(e["kind"], kind, "{e}");
            assert_eq!(e[up], boxed.as_str(), "{e}");
        }
    }
    // The default is by name; a first page holds as many as asked.
    assert_eq!(ann.ls(&boxed).await, by_name);
    let (st, page) = ann.page(&boxed, &[("limit", "7"), ("sort", "date")]).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(names(page["entries"].as_array().unwrap()), &by_date[..7]);
    assert!(page["next_cursor"].is_string(), "{page}");
}

#[tokio::test]
async fn deleting_and_other_users() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let (ann, bob) = (user(&node, "ann"), user(&node, "bob"));

    // Deleting moves to the trash: a file, then a folder with all in it (tests/trash.rs has
    // the rest).
    let boxed = ann.must_mkdir("box", "root").await;
    let fb = format!("/v1/folders/{boxed}");
    let (st, old) = ann.put_small("old.txt", &boxed, false, b"old").await;
    assert_eq!(st, StatusCode::CREATED, "{old}");
    let (st, _) = ann.del(&format!("/v1/files/{}", id(&old))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(ann.ls(&boxed).await.is_empty());
    // The deleted file's name is free again.
    let (st, again) = ann.put_small("old.txt", &boxed, false, b"2").await;
    assert_eq!(st, StatusCode::CREATED, "{again}");
    ann.must_mkdir("inner", &boxed).await;
    let (st, body) = ann.del(&fb).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    refused(&ann.page(&boxed, &[]).await, "not_found");
    refused(&ann.del(&fb).await, "not_found");
    refused(
        &ann.get(&format!("/v1/files/{}", id(&again))).await,
        "not_found",
    );
    assert!(ann.ls("root").await.is_empty());

    // Bob can do nothing with ann's folder: to him it does not exist.
    let keep = ann.must_mkdir("keep", "root").await;
    let fk = format!("/v1/folders/{keep}");
    let (st, kept) = ann.put_small("kept.txt", &keep, false, b"ann's").await;
    assert_eq!(st, StatusCode::CREATED, "{kept}");
    refused(&bob.page(&keep, &[]).await, "not_found");
    bob.patch_fails(&fk, named("mine"), "not_found").await;
    refused(&bob.del(&fk).await, "not_found");
    let got = bob.put_small("x.txt", &keep, false, b"x").await;
    refused(&got, "not_found");
    let got = bob.upload_into("y.txt", &keep, false, b"y").await;
    refused(&got, "not_found");
    refused(&bob.mkdir("sub", &keep).await, "not_found");
    // Nor move his own things into it.
    let (st, bobs) = bob.put_small("bobs.txt", "root", false, b"bob's").await;
    assert_eq!(st, StatusCode::CREATED, "{bobs}");
    let fbob = format!("/v1/files/{}", id(&bobs));
    bob.patch_fails(&fbob, to(&keep), "not_found").await;
    let his = bob.must_mkdir("keep", "root").await; // names are per user
    let fhis = format!("/v1/folders/{his}");
    bob.patch_fails(&fhis, to(&keep), "not_found").await;

    // Bob's root holds only his own entries; ann's folder and file are as she left them.
    let root = bob.list_all("root", None, 100).await;
    assert_eq!(names(&root), ["bobs.txt", "keep"]);
    assert!(root.iter().all(|e| id(e) != keep), "{root:?}");
    let (st, page) = ann.page(&keep, &[]).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(page["folder"]["name"], "keep");
    assert_eq!(names(page["entries"].as_array().unwrap()), ["kept.txt"]);
}
