//! Hostile file-system entries, on real files: key and passphrase files that are not private
//! (world-readable, symbolic links, devices, another user's), symbolic links planted as the
//! lock file, the header or the store directory, store directories with loose modes or
//! another owner, and FIFOs, sockets, links and directories planted under record names.
//! Every case must end in a typed error or be made safe, quickly: nothing may hang, nothing
//! outside the store may be created or touched. Some cases need root (`chown`); the test
//! says when it skips them.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use token_store_core::{
    Error, KeyKind, KeySource, ListEntry, ListFilter, Precondition, PutOptions, RawStore,
    StorageKey, StoreUrl,
};

fn key(n: &str) -> StorageKey {
    StorageKey::single(KeyKind::Meta, n).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Another user's uid (`nobody`), for the ownership cases run as root.
const OTHER_UID: u32 = 65534;

fn mkfifo(p: &Path) {
    let mode = rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR;
    rustix::fs::mkfifoat(rustix::fs::CWD, p, mode).unwrap();
}

/// Runs `f` on a thread of its own and fails the test if it has not returned in 20 s: the
/// old code blocked a whole thread in `open(2)` on a FIFO, which no async timeout can cut.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} hung (blocked on a planted FIFO?)"))
}

/// `fut` on a runtime of its own, under [`within`].
fn run<T: Send + 'static>(
    what: &str,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    within(what, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fut)
    })
}

async fn open_url(url: String) -> token_store_core::Result<token_store_core::TokenStore> {
    token_store_file::open_url(&StoreUrl::parse(&url)?).await
}

fn url(dir: &Path, param: &str, value: &Path) -> String {
    format!("file://{}?{param}={}", dir.display(), value.display())
}

/// Key and passphrase files are read like an ssh private key, through `open_url`: a
/// world-readable one, a symbolic link (even to a good key), `/dev/zero` and another user's
/// file are refused with a typed error, and no store is created under such a key.
#[test]
fn key_files_that_are_not_private_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.key");
    common::write_private(&good, &[7u8; 32]);
    let loose = tmp.path().join("loose.key");
    common::write_private(&loose, &[7u8; 32]);
    chmod(&loose, 0o644);
    let link = tmp.path().join("link.key");
    symlink(&good, &link).unwrap();
    let dangling = tmp.path().join("dangling.key");
    symlink(tmp.path().join("nowhere"), &dangling).unwrap();
    let loose_pass = tmp.path().join("loose.pass");
    common::write_private(&loose_pass, b"correct horse battery staple\n");
    chmod(&loose_pass, 0o640);
    let linked_pass = tmp.path().join("linked.pass");
    symlink(&loose_pass, &linked_pass).unwrap();

    let mut cases: Vec<(&str, &str, PathBuf)> = vec![
        ("0644 key file", "key_file", loose),
        ("symlinked key file", "key_file", link),
        ("dangling symlink as key file", "key_file", dangling.clone()),
        (
            "/dev/zero as key file",
            "key_file",
            PathBuf::from("/dev/zero"),
        ),
        ("0640 passphrase file", "passphrase_file", loose_pass),
        ("symlinked passphrase file", "passphrase_file", linked_pass),
    ];
    if is_root() {
        let foreign = tmp.path().join("foreign.key");
        common::write_private(&foreign, &[7u8; 32]);
        std::os::unix::fs::chown(&foreign, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
        cases.push(("another user's key file", "key_file", foreign));
    } else {
        println!("not root: the another-user's-key-file case is skipped");
    }
    for (i, (what, param, path)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("store-{i}"));
        let got = run(what, open_url(url(&dir, param, &path)));
        let err = got.err().unwrap_or_else(|| panic!("{what}: opened"));
        assert!(
            matches!(err, Error::PermissionDenied { .. } | Error::Config { .. }),
            "{what}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{what}: {message}"
        );
        assert!(
            !dir.join("store.json").exists(),
            "{what}: a store was created"
        );
        println!("{what}: {message}");
    }
    // The dangling link was not followed to create a key at its target.
    assert!(!tmp.path().join("nowhere").exists());
    // The good key file works, through the URL too.
    let dir = tmp.path().join("store-good");
    run("good key", open_url(url(&dir, "key_file", &good))).unwrap();
}

/// `.lock` planted as a symbolic link (the store directory's owner, or anyone who could
/// write it once, can do that): opening refuses it, and the link's target is neither created
/// nor changed, as root too.
#[test]
fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("key");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();

    // A new store directory holding only the link.
    let dir = tmp.path().join("new");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    let target = outside.join("created-by-the-store");
    symlink(&target, dir.join(".lock")).unwrap();
    let got = run(
        "open",
        common::open_owned(dir.clone(), KeySource::KeyFile(key_file.clone())),
    );
    assert!(
        matches!(got, Err(Error::PermissionDenied { ref message, .. }) if message.contains("symbolic link")),
        "{got:?}"
    );
    assert!(!target.exists(), "the store created the lock link's target");

    // An existing store whose lock file was replaced by a link to a precious file.
    let dir = tmp.path().join("existing");
    let store = run(
        "open",
        common::open_owned(dir.clone(), KeySource::KeyFile(key_file.clone())),
    )
    .unwrap();
    drop(store);
    let precious = outside.join("precious");
    std::fs::write(&precious, b"precious").unwrap();
    chmod(&precious, 0o644);
    let before = std::fs::metadata(&precious).unwrap();
    std::fs::remove_file(dir.join(".lock")).unwrap();
    symlink(&precious, dir.join(".lock")).unwrap();
    let got = run(
        "reopen",
        common::open_owned(dir.clone(), KeySource::KeyFile(key_file)),
    );
    assert!(
        matches!(got, Err(Error::PermissionDenied { .. })),
        "{got:?}"
    );
    let after = std::fs::metadata(&precious).unwrap();
    assert_eq!(std::fs::read(&precious).unwrap(), b"precious");
    assert_eq!(mode(&precious), 0o644);
    assert_eq!(before.modified().unwrap(), after.modified().unwrap());
}

/// `store.json` replaced by a symbolic link (to a FIFO, or to a copy of the real header) is
/// not followed: opening fails at once instead of blocking on the FIFO or trusting a header
/// that lives elsewhere.
#[test]
fn a_symlinked_store_header_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("key");
    let dir = tmp.path().join("s");
    run(
        "open",
        common::open_owned(dir.clone(), KeySource::KeyFile(key_file.clone())),
    )
    .unwrap();
    let header = dir.join("store.json");
    let copy = tmp.path().join("copy.json");
    std::fs::copy(&header, &copy).unwrap();
    let fifo = tmp.path().join("fifo");
    mkfifo(&fifo);
    for target in [&fifo, &copy] {
        std::fs::remove_file(&header).unwrap();
        symlink(target, &header).unwrap();
        let got = run(
            "open",
            common::open_owned(dir.clone(), KeySource::KeyFile(key_file.clone())),
        );
        assert!(
            matches!(got, Err(Error::Corrupt { ref message, .. }) if message.contains("symbolic link")),
            "{target:?}: {got:?}"
        );
    }
    // The real header back: the store opens.
    std::fs::remove_file(&header).unwrap();
    std::fs::copy(&copy, &header).unwrap();
    run(
        "open",
        common::open_owned(dir, KeySource::KeyFile(key_file)),
    )
    .unwrap();
}

/// The store directory must be a directory of ours that nobody else can change: a symbolic
/// link to one is refused (and nothing is created in its target), another user's is refused
/// (as root too), one others can write is refused, and one others can only read (what
/// `mkdir` makes under a usual umask) is made 0700 when it holds nothing but the store,
/// refused when it holds more. A record directory swapped for a link is refused as well.
#[test]
fn store_directories_must_be_private_directories_of_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let key_source = || KeySource::KeyFile(tmp.path().join("key"));

    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    chmod(&real, 0o700);
    let link = tmp.path().join("link");
    symlink(&real, &link).unwrap();
    let got = run("open", common::open_owned(link.clone(), key_source()));
    assert!(
        matches!(got, Err(Error::PermissionDenied { ref message, .. }) if message.contains("symbolic link")),
        "{got:?}"
    );
    assert_eq!(
        std::fs::read_dir(&real).unwrap().count(),
        0,
        "the link was followed"
    );

    for loose in [0o755, 0o750, 0o705] {
        let dir = tmp.path().join(format!("loose-{loose:o}"));
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, loose);
        let store = run("open", common::open_owned(dir.clone(), key_source())).unwrap();
        assert_eq!(mode(&dir), 0o700, "{loose:o} was not narrowed");
        let s = store.clone();
        run("write", async move {
            s.write(&key("a"), b"v", &PutOptions::default()).await
        })
        .unwrap();
        // Widened again while open: the next open narrows it again.
        drop(store);
        chmod(&dir, loose);
        run("reopen", common::open_owned(dir.clone(), key_source())).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }
    // Readable by others and holding more than a store (a home directory given by mistake):
    // refused, its mode left alone.
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("notes.txt"), b"not the store's").unwrap();
    chmod(&shared, 0o755);
    let got = run("open", common::open_owned(shared.clone(), key_source()));
    assert!(
        matches!(got, Err(Error::PermissionDenied { ref message, .. }) if message.contains("notes.txt")),
        "{got:?}"
    );
    assert_eq!(mode(&shared), 0o755);
    assert!(!shared.join("store.json").exists());
    for writable in [0o770, 0o707, 0o777] {
        let dir = tmp.path().join(format!("writable-{writable:o}"));
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, writable);
        let got = run("open", common::open_owned(dir.clone(), key_source()));
        assert!(
            matches!(got, Err(Error::PermissionDenied { .. })),
            "{writable:o}: {got:?}"
        );
        assert!(!dir.join("store.json").exists());
    }
    if is_root() {
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        chmod(&theirs, 0o700);
        std::os::unix::fs::chown(&theirs, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
        let got = run("open", common::open_owned(theirs.clone(), key_source()));
        assert!(
            matches!(got, Err(Error::PermissionDenied { .. })),
            "{got:?}"
        );
        assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);
    } else {
        println!("not root: the another-user's-directory case is skipped");
    }

    // A record directory replaced by a link to a copy of itself.
    let dir = tmp.path().join("records-linked");
    run("open", common::open_owned(dir.clone(), key_source())).unwrap();
    let (_, records) = common::store_cipher(&dir, &tmp.path().join("key"));
    let moved = tmp.path().join("moved-records");
    std::fs::rename(&records, &moved).unwrap();
    symlink(&moved, &records).unwrap();
    let got = run("open", common::open_owned(dir, key_source()));
    assert!(
        matches!(got, Err(Error::PermissionDenied { .. })),
        "{got:?}"
    );
}

/// FIFOs, a socket, links and a directory planted under record names (and a FIFO under a
/// foreign name) can hang neither `get` nor `list` nor a re-key: each is its key's
/// `Corrupt` error and an unreadable entry of the listing, the other records stay readable,
/// and an unconditional put or delete clears it.
#[test]
fn planted_fifos_sockets_and_links_never_hang_get_or_list() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("key");
    let dir = tmp.path().join("s");
    let store = run(
        "open",
        common::open_owned(dir.clone(), KeySource::KeyFile(key_file.clone())),
    )
    .unwrap();
    let names = [
        "fifo",
        "socket",
        "link-to-fifo",
        "link-to-file",
        "directory",
        "good",
    ];
    for n in names {
        let s = store.clone();
        run("write", async move {
            s.write(&key(n), b"v", &PutOptions::default()).await
        })
        .unwrap();
    }
    let path = |n: &str| common::record_path(&dir, &key_file, &key(n));
    let outside_fifo = tmp.path().join("outside-fifo");
    mkfifo(&outside_fifo);
    for n in names.iter().filter(|n| **n != "good") {
        std::fs::remove_file(path(n)).unwrap();
    }
    mkfifo(&path("fifo"));
    // Bound at a short path (socket paths are limited to ~108 bytes), then moved into place.
    let _listener = std::os::unix::net::UnixListener::bind(tmp.path().join("sock")).unwrap();
    std::fs::rename(tmp.path().join("sock"), path("socket")).unwrap();
    symlink(&outside_fifo, path("link-to-fifo")).unwrap();
    symlink(path("good"), path("link-to-file")).unwrap();
    std::fs::create_dir(path("directory")).unwrap();
    let (_, records) = common::store_cipher(&dir, &key_file);
    mkfifo(&records.join("pipe"));

    let expect = [
        ("fifo", "a FIFO"),
        ("socket", "a socket"),
        ("link-to-fifo", "a symbolic link"),
        ("link-to-file", "a symbolic link"),
        ("directory", "a directory"),
    ];
    for (n, what) in expect {
        let s = store.clone();
        let got = run(n, async move { s.read(&key(n)).await });
        assert!(
            matches!(&got, Err(Error::Corrupt { message, .. }) if message.contains(what)),
            "{n}: {got:?}"
        );
    }
    let s = store.clone();
    let good = run("get good", async move { s.read(&key("good")).await })
        .unwrap()
        .unwrap();
    assert_eq!(good.value.as_slice(), b"v");

    let s = store.clone();
    let listed = run("list", async move {
        s.scan(KeyKind::Meta, &ListFilter::all()).await
    })
    .unwrap();
    let keys: Vec<_> = listed
        .iter()
        .filter_map(|e| match e {
            ListEntry::Key(k) => Some(k.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, vec![key("good")]);
    let unreadable: Vec<_> = listed
        .iter()
        .filter_map(|e| match e {
            ListEntry::Unreadable { location, reason } => Some((location.clone(), reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(unreadable.len(), 6, "{unreadable:?}");
    for (n, what) in expect {
        let name = path(n).file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            unreadable
                .iter()
                .any(|(l, r)| *l == name && r.contains(what)),
            "{n} not reported: {unreadable:?}"
        );
    }
    assert!(unreadable.iter().any(|(l, _)| l == "pipe"));

    // A re-key stops on them (they would be lost), without hanging.
    let s = store.clone();
    let refused = run("rekey", async move {
        s.rekey(KeySource::passphrase("new")).await
    });
    assert!(matches!(refused, Err(Error::Corrupt { .. })), "{refused:?}");

    // Conditional operations fail, unconditional ones clear the entry.
    let s = store.clone();
    let cas = run("cas", async move {
        s.write(&key("fifo"), b"x", &PutOptions::new(Precondition::IfAbsent))
            .await
    });
    assert!(matches!(cas, Err(Error::Corrupt { .. })), "{cas:?}");
    for n in ["fifo", "socket", "link-to-fifo"] {
        let s = store.clone();
        run("put", async move {
            s.write(&key(n), b"repaired", &PutOptions::default()).await
        })
        .unwrap();
        let s = store.clone();
        let got = run("get", async move { s.read(&key(n)).await })
            .unwrap()
            .unwrap();
        assert_eq!(got.value.as_slice(), b"repaired", "{n}");
    }
    let s = store.clone();
    assert!(
        run("delete", async move {
            s.remove(&key("link-to-file"), &Precondition::Any).await
        })
        .unwrap()
    );
    // The link was removed, not its target.
    assert!(path("good").is_file());
    // The outside FIFO was never opened for writing or replaced.
    assert!(
        std::fs::symlink_metadata(&outside_fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

/// Cleaning up after a crash (a leftover record directory of an interrupted re-key, temporary
/// files) removes what is in the store and nothing a link there points to.
#[test]
fn cleanup_removes_leftovers_without_following_links() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("key");
    let dir = tmp.path().join("s");
    run(
        "open",
        common::open_owned(dir.clone(), KeySource::KeyFile(key_file.clone())),
    )
    .unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"precious").unwrap();

    let leftover = dir.join(format!("d-{}", "ab".repeat(16)));
    std::fs::create_dir_all(leftover.join("nested/deeper")).unwrap();
    std::fs::write(leftover.join("f"), b"x").unwrap();
    std::fs::write(leftover.join("nested/deeper/g"), b"x").unwrap();
    symlink(&outside, leftover.join("link-to-dir")).unwrap();
    symlink(outside.join("precious"), leftover.join("link-to-file")).unwrap();
    mkfifo(&leftover.join("fifo"));
    symlink(&outside, dir.join(".tmp-0123456789abcdef")).unwrap();
    let (_, records) = common::store_cipher(&dir, &key_file);
    mkfifo(&records.join(".tmp-fedcba9876543210"));

    run(
        "reopen",
        common::open_owned(dir.clone(), KeySource::KeyFile(key_file.clone())),
    )
    .unwrap();
    assert!(!leftover.exists(), "the leftover record directory stayed");
    assert!(std::fs::symlink_metadata(dir.join(".tmp-0123456789abcdef")).is_err());
    assert!(std::fs::symlink_metadata(records.join(".tmp-fedcba9876543210")).is_err());
    assert_eq!(
        std::fs::read(outside.join("precious")).unwrap(),
        b"precious"
    );
}
