//! A test S3 server (moto) and a bucket of a test's own, read with an independent client
//! (boto3).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A moto server of this test's own (killed on drop), or the one `scripts/test` started.
pub struct S3 {
    pub endpoint: String,
    process: Option<Child>,
    pub bucket: String,
}

impl S3 {
    /// A fresh bucket on the shared test server (`WHARF_TEST_S3_ENDPOINT`), or on a moto
    /// started here. Without either, the test fails: S3 tests never skip.
    pub fn shared() -> S3 {
        match std::env::var("WHARF_TEST_S3_ENDPOINT") {
            Ok(endpoint) => Self::with_bucket(endpoint, None),
            Err(_) => Self::own(),
        }
    }

    /// A moto process for this test alone (needed to pause it).
    pub fn own() -> S3 {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed to run moto");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start: run scripts/test, which installs moto[server]"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self::with_bucket(endpoint, Some(child))
    }

    pub fn with_bucket(endpoint: String, process: Option<Child>) -> S3 {
        let bucket = format!("wharf-{}", uuid::Uuid::now_v7().simple());
        let s3 = S3 {
            endpoint,
            process,
            bucket,
        };
        s3.boto(&format!("s3.create_bucket(Bucket={:?})", s3.bucket));
        s3
    }

    /// Runs Python with `s3` bound to a boto3 client: the independent reader.
    pub fn boto(&self, code: &str) -> String {
        let script = format!(
            "import boto3, sys, json\n\
             s3 = boto3.client('s3', endpoint_url={:?}, aws_access_key_id='test', \
             aws_secret_access_key='test', region_name='us-east-1')\n{code}\n",
            self.endpoint
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "boto3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn object_bytes(&self, key: &str, path: &std::path::Path) -> Vec<u8> {
        self.boto(&format!(
            "s3.download_file({:?}, {:?}, {:?})",
            self.bucket,
            key,
            path.display().to_string()
        ));
        std::fs::read(path).unwrap()
    }

    pub fn multipart_uploads(&self) -> usize {
        self.boto(&format!(
            "print(len(s3.list_multipart_uploads(Bucket={:?}).get('Uploads', [])))",
            self.bucket
        ))
        .trim()
        .parse()
        .unwrap()
    }

    /// The keys of the multipart uploads in progress.
    pub fn multipart_keys(&self) -> Vec<String> {
        let out = self.boto(&format!(
            "print(json.dumps([u['Key'] for u in s3.list_multipart_uploads(Bucket={:?}).get('Uploads', [])]))",
            self.bucket
        ));
        serde_json::from_str(out.trim()).unwrap()
    }

    pub fn object_keys(&self) -> Vec<String> {
        let out = self.boto(&format!(
            "print(json.dumps([o['Key'] for o in s3.list_objects_v2(Bucket={:?}).get('Contents', [])]))",
            self.bucket
        ));
        serde_json::from_str(out.trim()).unwrap()
    }

    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("WHARF_STORE_KIND", "s3"),
            ("WHARF_STORE_ENDPOINT", self.endpoint.as_str()),
            ("WHARF_STORE_BUCKET", self.bucket.as_str()),
            ("WHARF_STORE_FORCE_PATH_STYLE", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("WHARF_UPLOAD_SWEEP_INTERVAL_SECS", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.process.as_ref().expect("own moto").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(p) = self.process.as_mut() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}
