//! Files a node keeps on disk, kept away from other local users (shared machines, Slurm nodes).
//!
//! Everything lives under the user's *state directory*, `$TMPDIR/oxray-<uid>`, which is
//! `0700` and owned by the user: the CLI's logs (`<session>.log`, `0600`) and last address, and
//! `sessions/<session>/`, one directory per running cluster node holding its `pid` file, the
//! executables fetched from other nodes (`exe-<sha256>`) and, for a head the CLI made a secret
//! for, that `secret`. Rules:
//!
//! - Directories are created `0700`. One that already exists must be a real directory (a
//!   symbolic link is refused, never followed), owned by the user, with no group or other
//!   permission bits; else the start fails with an error naming the path and the fix. The one
//!   exception: a directory of the user that others may only *read* (`0755`, as older versions
//!   made the state directory) is tightened to `0700` in place, since nobody else can have put
//!   anything in it. The checks run on a descriptor opened with `O_NOFOLLOW`, so a link
//!   swapped in between a check and its use is not followed either.
//! - Files are opened with `O_NOFOLLOW`, created `0600` (`0700` for executables), new files
//!   with `create_new` where the name is ours alone.
//! - Session and cluster names are checked ([`check_name`]) before they name any path.
//! - Secret files must belong to the user and be unreadable by group and others
//!   ([`read_secret_file`]).
//! - A node's session directory records its pid (and the process's start time, so a reused
//!   pid does not count). Directories of processes that are gone (a node killed with SIGKILL
//!   cannot clean up) are removed by the next node start or `oxray start`/`up`/`stop`
//!   ([`sweep_stale_sessions`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest session or cluster name.
pub const MAX_NAME_LEN: usize = 100;

/// A session directory without a readable `pid` file is left alone this long (it may be
/// being made right now).
const UNCLAIMED_GRACE: Duration = Duration::from_secs(60);

/// This process's user id.
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The user's state directory, `$TMPDIR/oxray-<uid>` (not created; see [`ensure_state_dir`]).
pub fn state_dir() -> PathBuf {
    std::env::temp_dir().join(format!("oxray-{}", uid()))
}

/// Where session `session`'s directory is (not created; see [`claim_session_dir`]).
pub fn session_dir(session: &str) -> PathBuf {
    state_dir().join("sessions").join(session)
}

/// Checks a session or cluster name before it names a path or a socket: 1 to
/// [`MAX_NAME_LEN`] letters, digits, `-`, `_` or `.`, not starting with `.` (so no `/`, `..`,
/// NUL or hidden names). `what` names the setting in the error.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name.starts_with('.')
        || !name.chars().all(valid)
    {
        return Err(format!(
            "{what} {name:?} is not allowed: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' \
             or '.', not starting with '.'"
        ));
    }
    Ok(())
}

fn nofollow() -> i32 {
    libc::O_NOFOLLOW | libc::O_CLOEXEC
}

/// Creates `path` as a `0700` directory of this user, or checks the one that is there (see the
/// module's rules). Its parent must exist.
pub fn private_dir(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating {}: {e}", path.display())),
    }
    check_private_dir(path)
}

/// Checks that `path` is a directory of this user that no one else can use (see the module's
/// rules; a `0755`-style directory is tightened to `0700`).
pub fn check_private_dir(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let link_error = || {
        format!(
            "{shown} is a symbolic link, which oxray does not follow for its private \
             directories (another user may have planted it): remove it (`rm {shown}`) or set \
             TMPDIR to a directory of your own"
        )
    };
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("checking {shown}: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err(link_error());
    }
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow() | libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => link_error(),
            Some(libc::ENOTDIR) => format!("{shown} is not a directory: remove it"),
            _ => format!("opening {shown}: {e}"),
        })?;
    let meta = dir
        .metadata()
        .map_err(|e| format!("checking {shown}: {e}"))?;
    let me = uid();
    if meta.uid() != me {
        return Err(format!(
            "{shown} belongs to user {} and not to you (user {me}); another user may have made \
             it to read or replace your files: have it removed, or set TMPDIR to a directory of \
             your own",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{shown} can be written by other users (mode {mode:03o}), so its contents cannot be \
             trusted: remove it (`rm -r {shown}`) or make it private (`chmod 700 {shown}`) if you \
             know what is in it"
        ));
    }
    if mode & 0o077 != 0 {
        // Only readable by others (as older versions made it): nobody else can have put
        // anything here, so making it private is safe.
        dir.set_permissions(std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("making {shown} private (chmod 700): {e}"))?;
    }
    Ok(())
}

/// Creates (or checks) the state directory and its `sessions` directory; returns the former.
pub fn ensure_state_dir() -> Result<PathBuf, String> {
    let dir = state_dir();
    private_dir(&dir)?;
    private_dir(&dir.join("sessions"))?;
    Ok(dir)
}

/// Opens `path` for writing without following a symbolic link, creating it with `mode`
/// (`create_new`: it must not exist yet; else it is truncated and its mode set to `mode`).
pub fn open_private(path: &Path, mode: u32, create_new: bool) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).mode(mode).custom_flags(nofollow());
    if create_new {
        opts.create_new(true);
    } else {
        opts.create(true).truncate(true);
    }
    let file = opts.open(path)?;
    if !create_new {
        // An older file keeps its mode on open.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(file)
}

/// Writes `contents` to `path` (`0600`) by renaming a fresh file over it, so readers never see
/// a partial file and a link at `path` is replaced, not followed.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    open_private(&tmp, 0o600, true)
        .and_then(|mut f| f.write_all(contents))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("writing {}: {e}", path.display())
        })
}

/// Reads a cluster secret file, which must belong to this user and not be readable by group
/// or others (checked on the opened file, so what is checked is what is read). The content is
/// trimmed.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot read the secret file {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the secret file {shown}: {e}"))?;
    let me = uid();
    if meta.uid() != me {
        return Err(format!(
            "the secret file {shown} belongs to user {}, not to you (user {me}): use a copy of \
             your own (`cp {shown} ~/cluster.secret && chmod 600 ~/cluster.secret`)",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "the secret file {shown} can be read by other users (mode {mode:03o}): make it \
             private with `chmod 600 {shown}` (and make a new secret if others may have read it)"
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("cannot read the secret file {shown}: {e}"))?;
    Ok(text.trim().to_owned())
}

/// A process's state letter and start time (clock ticks after boot, `/proc/PID/stat` fields 3
/// and 22), if known.
fn proc_stat(pid: i32) -> Option<(char, Option<u64>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18).and_then(|s| s.parse().ok())))
}

/// Whether process `pid` (started at `start`, when recorded) still runs (a zombie does not).
fn process_alive(pid: i32, start: Option<u64>) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; kill only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    match proc_stat(pid) {
        Some(('Z' | 'X', _)) => false,
        Some((_, Some(now))) => start.is_none_or(|recorded| recorded == now),
        _ => true,
    }
}

/// What a session directory's `pid` file says: `Some(alive)`, or `None` without one.
fn recorded_owner_alive(dir: &Path) -> Option<bool> {
    let mut text = String::new();
    OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(dir.join("pid"))
        .and_then(|mut f| f.read_to_string(&mut text))
        .ok()?;
    let mut words = text.split_whitespace();
    let pid: i32 = words.next()?.parse().ok()?;
    let start = words.next().and_then(|s| s.parse().ok());
    Some(process_alive(pid, start))
}

/// Records this process as the owner of session directory `dir`.
fn write_pid(dir: &Path) -> Result<(), String> {
    let pid = std::process::id();
    let start = i32::try_from(pid)
        .ok()
        .and_then(proc_stat)
        .and_then(|(_, start)| start)
        .map_or(String::new(), |s| format!(" {s}"));
    write_private(&dir.join("pid"), format!("{pid}{start}\n").as_bytes())
}

/// Makes session `session`'s directory (checked as the module says) and records this process
/// as its owner. An existing directory whose recorded owner still runs is refused unless
/// `take_over` (a raylet that could bind the session's socket is its rightful owner, e.g. after
/// `oxray start` made the directory for it). Returns the directory.
pub fn claim_session_dir(session: &str, take_over: bool) -> Result<PathBuf, String> {
    check_name("session", session)?;
    ensure_state_dir()?;
    let dir = session_dir(session);
    private_dir(&dir)?;
    if !take_over && recorded_owner_alive(&dir) == Some(true) {
        return Err(format!(
            "the session {session:?} is in use by a running process ({}); pick another \
             --session or stop that node first",
            dir.display()
        ));
    }
    write_pid(&dir)?;
    Ok(dir)
}

/// Removes the session directories of processes that are gone (and those without a `pid`
/// file, once older than a minute). Returns the sessions removed. Never fails: a state
/// directory that is missing or fails its checks is left alone (the start that needs it
/// reports it).
pub fn sweep_stale_sessions() -> Vec<String> {
    let sessions = state_dir().join("sessions");
    if check_private_dir(&state_dir()).is_err() || check_private_dir(&sessions).is_err() {
        return Vec::new();
    }
    sweep_in(&sessions)
}

fn sweep_in(sessions: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sessions) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let stale = match recorded_owner_alive(&path) {
            Some(alive) => !alive,
            None => meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > UNCLAIMED_GRACE),
        };
        if stale && std::fs::remove_dir_all(&path).is_ok() {
            swept.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    swept
}

/// SHA-256 (lowercase hex) and length of everything `reader` yields.
pub(crate) fn sha256(mut reader: impl Read) -> std::io::Result<(String, u64)> {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        digest.update(&buf[..n]);
    }
    Ok((hex(digest.finish().as_ref()), len))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `path` is a cached executable with SHA-256 `hash` and `len` bytes: a regular file
/// of this user (not a link), hashed now. One that is there but does not match is removed (so
/// it is fetched again).
pub fn cached_exe_ok(path: &Path, hash: &str, len: u64) -> bool {
    let check = || -> std::io::Result<bool> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nofollow())
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.uid() != uid() || meta.len() != len {
            return Ok(false);
        }
        let (got, n) = sha256(file)?;
        Ok(n == len && got == hash)
    };
    match check() {
        Ok(true) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        _ => {
            let _ = std::fs::remove_file(path);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A scratch directory of this test, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("oxray-files-test-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch dir");
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).expect("stat").mode() & 0o777
    }

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        for bad in [
            "",
            "..",
            ".",
            "../../../tmp/evil",
            "a/b",
            "/abs",
            "nul\0x",
            ".hidden",
            "sp ace",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            let err = check_name("session", bad).expect_err(bad);
            assert!(err.contains("is not allowed"), "{err}");
        }
        for good in ["oxray-123-abc", "demo_head", "n1.cluster", &"x".repeat(100)] {
            check_name("session", good).expect(good);
        }
    }

    #[test]
    fn private_dirs_are_made_0700_and_links_are_refused() {
        let s = Scratch::new("dirs");
        let made = s.0.join("made");
        private_dir(&made).expect("create");
        assert_eq!(mode(&made), 0o700);
        private_dir(&made).expect("an existing private dir passes");
        // A link planted where the directory should be is refused, and not followed.
        let target = s.0.join("target");
        std::fs::create_dir(&target).expect("target");
        let planted = s.0.join("planted");
        symlink(&target, &planted).expect("symlink");
        let err = private_dir(&planted).expect_err("a symlink must be refused");
        assert!(
            err.contains("symbolic link") && err.contains("rm "),
            "{err}"
        );
        // Writable by others: refused, with the fix.
        let open = s.0.join("open");
        std::fs::create_dir(&open).expect("dir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = private_dir(&open).expect_err("0777 must be refused");
        assert!(
            err.contains("written by other users") && err.contains("chmod 700"),
            "{err}"
        );
        // A file in its place: refused.
        let file = s.0.join("file");
        std::fs::write(&file, "x").expect("file");
        assert!(private_dir(&file).is_err());
    }

    #[test]
    fn a_readable_dir_of_ours_is_made_private() {
        // The documented choice: 0755 (as older versions made the state directory) is
        // tightened, since nobody else could write into it.
        let s = Scratch::new("tighten");
        let dir = s.0.join("old");
        std::fs::create_dir(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&dir).expect("tightened");
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn private_files_do_not_follow_links() {
        let s = Scratch::new("files");
        let victim = s.0.join("victim");
        std::fs::write(&victim, "precious").expect("victim");
        let link = s.0.join("log");
        symlink(&victim, &link).expect("symlink");
        assert!(open_private(&link, 0o600, false).is_err());
        assert!(open_private(&link, 0o600, true).is_err());
        // Replacing by rename swaps the link itself.
        write_private(&link, b"new").expect("write");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
        assert_eq!(std::fs::read_to_string(&link).expect("read"), "new");
        assert_eq!(mode(&link), 0o600);
        // An older 0644 file is made 0600 when reopened.
        let old = s.0.join("old.log");
        std::fs::write(&old, "x").expect("old");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        drop(open_private(&old, 0o600, false).expect("open"));
        assert_eq!(mode(&old), 0o600);
    }

    #[test]
    fn readable_secret_files_are_refused_with_the_fix() {
        let s = Scratch::new("secret");
        let path = s.0.join("s.secret");
        std::fs::write(&path, " 0123456789abcdef \n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_secret_file(&path).expect_err("0644 must be refused");
        assert!(
            err.contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(read_secret_file(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_secret_file(&path).expect("read"), "0123456789abcdef");
    }

    #[test]
    fn cached_executables_are_checked_by_hash_not_size() {
        let s = Scratch::new("exe");
        let good = b"#!/bin/sh\necho the real program\n";
        let (hash, len) = sha256(&good[..]).expect("hash");
        let path = s.0.join(format!("exe-{hash}"));
        std::fs::write(&path, good).expect("write");
        assert!(cached_exe_ok(&path, &hash, len));
        // Same size, other bytes: not used, and removed so it is fetched again.
        let mut evil = good.to_vec();
        evil[10] ^= 1;
        std::fs::write(&path, &evil).expect("write");
        assert!(!cached_exe_ok(&path, &hash, len));
        assert!(!path.exists(), "the damaged copy was not removed");
        // A link to the right bytes is not used either.
        let elsewhere = s.0.join("elsewhere");
        std::fs::write(&elsewhere, good).expect("write");
        symlink(&elsewhere, &path).expect("symlink");
        assert!(!cached_exe_ok(&path, &hash, len));
        assert!(elsewhere.exists(), "the link's target was touched");
        assert!(!cached_exe_ok(&s.0.join("missing"), &hash, len));
    }

    #[test]
    fn liveness_of_recorded_owners() {
        let s = Scratch::new("pid");
        assert_eq!(recorded_owner_alive(&s.0), None);
        write_pid(&s.0).expect("pid");
        assert_eq!(recorded_owner_alive(&s.0), Some(true));
        // A process that ended: first a zombie (not reaped yet), then gone.
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        std::fs::write(s.0.join("pid"), format!("{pid}\n")).expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while recorded_owner_alive(&s.0) != Some(false) {
            assert!(
                std::time::Instant::now() < deadline,
                "a zombie counts as alive"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().expect("wait");
        assert_eq!(recorded_owner_alive(&s.0), Some(false));
        // Our pid with another start time: a reused pid, so not the owner.
        std::fs::write(s.0.join("pid"), format!("{} 1\n", std::process::id())).expect("write");
        assert_eq!(recorded_owner_alive(&s.0), Some(false));
    }

    #[test]
    fn stale_session_dirs_are_swept_and_live_ones_kept() {
        let s = Scratch::new("sweep");
        let live = s.0.join("live");
        let dead = s.0.join("dead");
        let fresh = s.0.join("fresh");
        for d in [&live, &dead, &fresh] {
            private_dir(d).expect("dir");
        }
        write_pid(&live).expect("pid");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        std::fs::write(dead.join("pid"), format!("{pid}\n")).expect("pid");
        std::fs::write(dead.join("exe-abc"), "cached").expect("exe");
        // `fresh` has no pid file yet: being made, so kept for a minute.
        assert_eq!(sweep_in(&s.0), vec!["dead".to_owned()]);
        assert!(live.exists() && fresh.exists() && !dead.exists());
    }
}
