//! A clamd of a test's own, on a loopback TCP port, with a signature database made here (EICAR,
//! plus whatever a test adds): started at once or later, stopped, restarted on the same port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// The standard 68-byte EICAR test file.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

pub struct Clamd {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Clamd {
    /// A clamd, running.
    pub fn start() -> Clamd {
        let mut c = Self::unstarted();
        c.spawn();
        c
    }

    /// A clamd's port and database, with nothing listening yet: [`Clamd::spawn`] starts it.
    pub fn unstarted() -> Clamd {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("db")).unwrap();
        // sigtool --md5 of the EICAR file; a .hdb line is md5:size:name.
        std::fs::write(
            dir.path().join("db/test.hdb"),
            "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n",
        )
        .unwrap();
        Clamd {
            port: free_port(),
            dir,
            child: None,
        }
    }

    /// A signature for exactly `data` (in effect once clamd is started again).
    pub fn add_signature(&self, data: &[u8], name: &str) {
        use md5::{Digest, Md5};
        let line = format!("{}:{}:{name}\n", hex(&Md5::digest(data)), data.len());
        let path = self.dir.path().join("db/test.hdb");
        let mut db = std::fs::read_to_string(&path).unwrap();
        db.push_str(&line);
        std::fs::write(path, db).unwrap();
    }

    pub fn spawn(&mut self) {
        let d = self.dir.path();
        let conf = format!(
            "Foreground yes\nDatabaseDirectory {}\nTCPSocket {}\nTCPAddr 127.0.0.1\n\
             LogFile {}\nPidFile {}\nStreamMaxLength 100M\n",
            d.join("db").display(),
            self.port,
            d.join("clamd.log").display(),
            d.join("clamd.pid").display()
        );
        std::fs::write(d.join("clamd.conf"), conf).unwrap();
        let child = Command::new("clamd")
            .arg("-c")
            .arg(d.join("clamd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd is not installed: run scripts/test, which installs clamav-daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ping(self.port) {
            assert!(
                Instant::now() < deadline,
                "clamd did not start: see {}",
                d.join("clamd.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn addr(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("clamd.log")
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a clamd answers PING on the loopback port.
pub fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 5];
    s.write_all(b"zPING\0").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"PONG\0"
}

/// What the scanning tests give a node: a fast poll and sweep, and `clamd` (empty: none
/// configured).
pub fn scan_env(clamd: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("WHARF_SCAN_POLL_MS", "200"),
        ("WHARF_SCAN_TIMEOUT_SECS", "30"),
        ("WHARF_UPLOAD_SWEEP_INTERVAL_SECS", "1"),
    ];
    if !clamd.is_empty() {
        env.push(("WHARF_SCAN_CLAMD", clamd));
    }
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What a node with no clamd configured gets: it looks for one at `probe` every second.
pub fn probe_env(probe: &str) -> Vec<(String, String)> {
    let mut env = scan_env("");
    env.push(("WHARF_SCAN_CLAMD_PROBE".into(), probe.into()));
    env.push(("WHARF_SCAN_PROBE_SECS".into(), "1".into()));
    env
}
