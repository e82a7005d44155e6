//! Private D-Bus buses (and gnome-keyrings on them) that a test starts and kills itself, so
//! locking a keyring or having no Secret Service never disturbs other tests.
#![allow(dead_code)]
// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use token_store_conformance::services;

/// Whether the binaries for private buses exist; under CI their absence is a failure.
pub fn have_binaries() -> bool {
    let ok = ["dbus-daemon", "gnome-keyring-daemon"].iter().all(|b| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        assert!(
            !services::in_ci(),
            "dbus-daemon / gnome-keyring-daemon missing under CI=true"
        );
        println!("not run: dbus-daemon or gnome-keyring-daemon is not installed");
    }
    ok
}

/// A dbus-daemon (and maybe a gnome-keyring) in a temp dir; killed on drop.
pub struct PrivateBus {
    pub address: String,
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl PrivateBus {
    /// A bus with nothing on it. With `activation`, the standard session service files are
    /// used, so a call to org.freedesktop.secrets D-Bus-activates gnome-keyring (without
    /// `--unlock`, as a headless login would).
    pub fn start(activation: bool) -> PrivateBus {
        // Short path: unix socket paths stop at 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("tskc")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  {}
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display(),
                if activation {
                    "<standard_session_servicedirs/>"
                } else {
                    ""
                }
            ),
        )
        .unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--nosyslog"])
            // What it activates inherits this environment: keep it inside the temp dir.
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_RUNTIME_DIR", dir.path().join("run"))
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "dbus-daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        PrivateBus {
            address: format!("unix:path={}", socket.display()),
            dir,
            children: vec![child],
        }
    }

    /// Starts an unlocked gnome-keyring (fresh data dir, so a `login` collection is created
    /// and is the default) on this bus; returns once it owns org.freedesktop.secrets.
    pub fn start_keyring(&mut self) {
        let mut child = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"pass").unwrap();
        self.children.push(child);
        assert!(
            self.wait_for_secrets_owner(true, Duration::from_secs(10)),
            "gnome-keyring did not start"
        );
    }

    /// Puts a process on the bus that owns org.freedesktop.secrets and never answers, like
    /// a provider stuck behind a prompt. Returns false when python3-dbus is missing.
    pub fn start_silent_provider(&mut self) -> bool {
        let script = "import dbus, sys, time\n\
                      bus = dbus.bus.BusConnection(sys.argv[1])\n\
                      bus.request_name('org.freedesktop.secrets')\n\
                      print('owned', flush=True)\n\
                      time.sleep(600)\n";
        let Ok(mut child) = Command::new("/usr/bin/python3")
            .args(["-c", script, &self.address])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        else {
            return false;
        };
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let _ = std::io::BufRead::read_line(&mut out, &mut line);
        self.children.push(child);
        line.starts_with("owned")
    }

    /// Polls until org.freedesktop.secrets has an owner on this bus (`owned`) or has none
    /// (`!owned`); false if that did not happen within `limit`.
    pub fn wait_for_secrets_owner(&self, owned: bool, limit: Duration) -> bool {
        let want = if owned {
            "boolean true"
        } else {
            "boolean false"
        };
        let start = Instant::now();
        loop {
            let out = Command::new("dbus-send")
                .arg(format!("--bus={}", self.address))
                .args([
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(want) {
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        // Keyring first, then the bus: only the processes this test started.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
