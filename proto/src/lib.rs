//! wharf-proto: the shapes that nodes and clients exchange.
//!
//! For now these are the HTTP API's JSON bodies; the gRPC and QUIC messages join them with the
//! cluster and QUIC issues.

use serde::{Deserialize, Serialize};

pub mod hash;

/// Every error answer: `{"error":{"code":"…","message":"…"}}`; `code` is stable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// With `missing_chunks`: the chunk indexes still to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<u32>>,
}

/// `POST /v1/uploads`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    pub name: String,
    pub size: u64,
    /// Whole-file BLAKE3 (hex); checked at completion.
    #[serde(default)]
    pub blake3: Option<String>,
    #[serde(default)]
    pub mime: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The folder the file goes in (a folder id; absent: the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// `fail` (409 `name_taken` when the folder has an entry of that name) or `rename`
    /// ("name (1).ext"). A request with neither this nor `folder` keeps both under a
    /// "(n)" name, as before folders existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_conflict: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadCreated {
    pub upload_id: String,
    pub chunk_size: u64,
    pub chunk_count: u32,
    /// RFC 3339.
    pub expires_at: String,
}

/// The answer to a create: an upload session (HTTP 201), or, when the create declared the
/// BLAKE3 of content the user already stores, the file of it, made at once (HTTP 200, with
/// `deduplicated` set; no byte needs to be sent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CreateAnswer {
    Upload(UploadCreated),
    File(Box<FileRecord>),
}

/// `GET /v1/uploads/{id}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStatus {
    pub upload_id: String,
    pub name: String,
    pub size: u64,
    pub chunk_size: u64,
    pub chunk_count: u32,
    /// `uploading`, `stored`, `aborted` or `expired`.
    pub state: String,
    pub received: Vec<u32>,
    pub missing: Vec<u32>,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
}

/// `GET /v1/uploads`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadList {
    pub uploads: Vec<UploadStatus>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub blake3: String,
    pub mime: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// `pending`, `clean`, `infected`, `unscanned` or `error`.
    pub scan: String,
    /// With `infected`: the signature; with `error`: what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// While a scanner holds the blob: the node scanning it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_node: Option<u64>,
    /// In the answer to a create: the user already stored this content, so the file was made
    /// at once and no byte needs to be sent (dedup).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deduplicated: bool,
    /// The folder the file is in (`null`: the root).
    #[serde(default)]
    pub folder: Option<String>,
    /// The current version's id (`GET /v1/files/{id}/versions` lists them all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A public file's permanent link (`/s/{token}`, no account needed); absent: private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

/// `GET /v1/files`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    pub files: Vec<FileRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /v1/usage`, and the answer of `PUT /v1/admin/users/{user}/quota`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub user: String,
    pub used: u64,
    pub reserved: u64,
    pub quota: u64,
}

/// `PATCH /v1/files/{id}` and `PATCH /v1/folders/{id}`: a new name, a new parent folder
/// (`"root"` or `null`: the root), or both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Absent: unchanged; `null` or `"root"`: the root.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub parent: Option<Option<String>>,
    /// A file's `public` (a permanent share link) or `private`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
}

/// A field that is present, even as `null`, is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `POST /v1/folders`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFolder {
    pub name: String,
    /// A folder id; absent, `null` or `"root"`: the root.
    #[serde(default)]
    pub parent: Option<String>,
    /// `fail` (the default) or `rename`.
    #[serde(default)]
    pub on_conflict: Option<String>,
}

/// A folder (`GET /v1/folders/{id}` gives it with a page of its entries).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderRecord {
    /// `root` for the root.
    pub id: String,
    pub name: String,
    /// `null`: the root (or this is the root).
    pub parent: Option<String>,
    /// RFC 3339 (absent for the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// An entry of a folder: a folder or a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    Folder(FolderRecord),
    File(Box<FileRecord>),
}

/// `GET /v1/folders/{id}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderListing {
    pub folder: FolderRecord,
    pub entries: Vec<Entry>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `PUT /v1/admin/users/{user}/quota`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetQuota {
    pub quota: u64,
}

/// The node-to-node gRPC protocol (`proto/cluster.proto`).
pub mod cluster {
    tonic::include_proto!("wharf.cluster.v1");
}

/// The client QUIC protocol (`proto/quic.proto`).
pub mod quic {
    tonic::include_proto!("wharf.quic.v1");

    /// The ALPN protocol id of wharf's QUIC endpoint.
    pub const ALPN: &[u8] = b"wharf/1";
    /// Control frames are small; a larger length prefix is a malformed frame.
    pub const MAX_FRAME: usize = 64 * 1024;

    use std::io;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Flow-control windows, on both ends, sized for high bandwidth-delay products: a whole
    /// chunk (8 MiB) in flight per stream, several streams per connection.
    pub const STREAM_WINDOW: u32 = 16 << 20;
    pub const CONNECTION_WINDOW: u32 = 128 << 20;

    /// Socket buffers for QUIC's UDP socket: at high rates the kernel's default (about 200 KiB)
    /// overflows and drops datagrams, which congestion control takes for loss.
    pub const SOCKET_BUFFER: usize = 8 << 20;

    /// A UDP socket for a QUIC endpoint, bound to `addr`, with [`SOCKET_BUFFER`]-sized buffers
    /// (or as large as the kernel allows: `net.core.rmem_max` / `wmem_max`).
    pub fn udp_socket(addr: std::net::SocketAddr) -> io::Result<std::net::UdpSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        // Best effort: a smaller buffer still works, only slower.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.bind(&addr.into())?;
        Ok(socket.into())
    }

    /// Reads one frame: a 4-byte big-endian length, then the message.
    pub async fn read_frame<M, R>(r: &mut R) -> io::Result<M>
    where
        M: prost::Message + Default,
        R: AsyncRead + Unpin,
    {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf).await?;
        M::decode(buf.as_slice()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes one frame (see [`read_frame`]).
    pub async fn write_frame<M, W>(w: &mut W, m: &M) -> io::Result<()>
    where
        M: prost::Message,
        W: AsyncWrite + Unpin,
    {
        let body = m.encode_to_vec();
        w.write_all(&(body.len() as u32).to_be_bytes()).await?;
        w.write_all(&body).await
    }
}
