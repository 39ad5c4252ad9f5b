//! Jobs handed to this node with `oxray job submit` (Ray's job submission): each is a driver
//! program the user built, uploaded over the node's local socket (which serves only the node's
//! own user), run here with `OXRAY_ADDRESS` set to this node, its output kept in a file.
//!
//! Each control connection (`ToRaylet::Jobs`) is served on a thread of its own, so an upload or
//! a `logs --follow` never holds up the node's event loop; a thread per job waits for its
//! process to exit. A job's files live in `SESSION_DIR/jobs/job-N/` (private to the user):
//! the program, `output.log` (its stdout and stderr) and `work/` (the uploaded working
//! directory, the program's current directory). They go with the session when the node stops,
//! and running jobs are killed then.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use oxray_common::frame;
use oxray_common::job_control::{JobInfo, JobReply, JobRequest, JobState, CHUNK};
use oxray_object_store::HeapBytes;

use crate::files;
use crate::log_watch::Watch;

/// The largest program accepted.
pub const MAX_PROGRAM: u64 = 2 << 30;
/// The largest working directory accepted, all files together.
pub const MAX_WORKING_DIR: u64 = 1 << 30;
/// The most files in a working directory.
pub const MAX_FILES: usize = 10_000;
/// Control connections served at once; more are refused.
pub const MAX_CONNECTIONS: usize = 16;
/// Jobs remembered (the oldest ended ones are forgotten, their files removed).
pub const MAX_JOBS: usize = 256;
/// How long a stopped job has after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a control connection may be silent mid-request.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The node's submitted jobs.
pub(crate) struct SubmittedJobs {
    /// The node's local address, handed to every job as `OXRAY_ADDRESS`.
    address: String,
    /// The node's session, whose directory holds the jobs' files.
    session: String,
    table: Mutex<Table>,
    /// Signalled whenever a job ends.
    ended: Condvar,
    connections: AtomicUsize,
}

#[derive(Default)]
struct Table {
    jobs: BTreeMap<u64, Job>,
    next: u64,
    /// Set when the node stops: no job starts after.
    closed: bool,
}

struct Job {
    info: JobInfo,
    dir: PathBuf,
    /// `oxray job stop` asked for its end.
    stopping: bool,
}

impl SubmittedJobs {
    pub(crate) fn new(address: &str, session: &str) -> Arc<SubmittedJobs> {
        Arc::new(SubmittedJobs {
            address: address.to_owned(),
            session: session.to_owned(),
            table: Mutex::new(Table {
                next: 1,
                ..Table::default()
            }),
            ended: Condvar::new(),
            connections: AtomicUsize::new(0),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves one control connection on a thread of its own.
    pub(crate) fn serve(self: &Arc<Self>, stream: UnixStream) {
        let taken = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CONNECTIONS).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            let _ = reply_error(
                &stream,
                format!("{MAX_CONNECTIONS} job connections are open already; try again"),
            );
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("oxray-job-control".into())
            .spawn(move || {
                let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
                if let Err(e) = me.connection(&stream) {
                    tracing::debug!("job control connection: {e}");
                }
                me.connections.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            self.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Answers the requests of one connection until it closes.
    fn connection(self: &Arc<Self>, stream: &UnixStream) -> std::io::Result<()> {
        let mut buf = HeapBytes::new();
        loop {
            let request = match frame::read::<JobRequest, _>(&mut &*stream, &mut buf) {
                Ok(r) => r,
                Err(frame::FrameError::Closed) => return Ok(()),
                Err(e) => {
                    let _ = reply_error(stream, format!("bad job request: {e}"));
                    return Ok(());
                }
            };
            match request {
                JobRequest::Submit {
                    program,
                    args,
                    size,
                    sha256,
                } => {
                    match self.submit(stream, &mut buf, program, args, size, &sha256) {
                        Ok(info) => frame::write(&mut &*stream, &JobReply::Submitted { info })?,
                        Err(message) => {
                            // The rest of the upload is not read: the connection ends here.
                            return reply_error(stream, message);
                        }
                    }
                }
                JobRequest::Status { job } => {
                    let reply = match self.info(&job) {
                        Ok(info) => JobReply::Info { info },
                        Err(message) => JobReply::Error { message },
                    };
                    frame::write(&mut &*stream, &reply)?;
                }
                JobRequest::List => {
                    let all = self.table().jobs.values().map(|j| j.info.clone()).collect();
                    frame::write(&mut &*stream, &JobReply::List { jobs: all })?;
                }
                JobRequest::Logs { job, follow } => self.logs(stream, &job, follow)?,
                JobRequest::Stop { job } => {
                    let reply = match self.stop(&job) {
                        Ok(info) => JobReply::Info { info },
                        Err(message) => JobReply::Error { message },
                    };
                    frame::write(&mut &*stream, &reply)?;
                }
                JobRequest::File { .. } | JobRequest::Chunk { .. } | JobRequest::Start => {
                    reply_error(stream, "File, Chunk and Start belong to a Submit".into())?;
                }
            }
        }
    }

    /// Receives a submission (the program, then the working directory) and starts it.
    fn submit(
        self: &Arc<Self>,
        stream: &UnixStream,
        buf: &mut HeapBytes,
        program: String,
        args: Vec<String>,
        size: u64,
        sha256: &[u8],
    ) -> Result<JobInfo, String> {
        files::check_name("program name", &program)?;
        if size > MAX_PROGRAM {
            return Err(format!(
                "the program is {size} bytes; at most {MAX_PROGRAM} are accepted"
            ));
        }
        let (n, dir) = {
            let mut t = self.table();
            if t.closed {
                return Err("the node is stopping".into());
            }
            let n = t.next;
            t.next += 1;
            (n, self.jobs_dir()?.join(format!("job-{n}")))
        };
        let made = self.receive(stream, buf, &dir, &program, size, sha256);
        let started = made.and_then(|work| self.start(n, &dir, &program, &args, &work));
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    /// The directory of every job, made on first use.
    fn jobs_dir(&self) -> Result<PathBuf, String> {
        let session = files::claim_session_dir(&self.session, true)?;
        let jobs = session.join("jobs");
        files::private_dir(&jobs)?;
        Ok(jobs)
    }

    /// Writes the program and the working directory's files under `dir`; the working directory.
    fn receive(
        &self,
        stream: &UnixStream,
        buf: &mut HeapBytes,
        dir: &Path,
        program: &str,
        size: u64,
        sha256: &[u8],
    ) -> Result<PathBuf, String> {
        files::private_dir(dir)?;
        let work = dir.join("work");
        files::private_dir(&work)?;
        let exe = dir.join(program);
        let got = receive_file(stream, buf, &exe, size, true)?;
        if got != sha256 {
            return Err("the program's SHA-256 does not match what was sent".into());
        }
        let (mut files, mut bytes) = (0usize, 0u64);
        loop {
            match read(stream, buf)? {
                JobRequest::File {
                    path,
                    size,
                    executable,
                } => {
                    files += 1;
                    bytes = bytes.saturating_add(size);
                    if files > MAX_FILES || bytes > MAX_WORKING_DIR {
                        return Err(format!(
                            "the working directory is too large: at most {MAX_FILES} files and \
                             {MAX_WORKING_DIR} bytes"
                        ));
                    }
                    let to = work.join(relative_path(&path)?);
                    if let Some(parent) = to.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                    }
                    receive_file(stream, buf, &to, size, executable)?;
                }
                JobRequest::Start => return Ok(work),
                other => return Err(format!("expected a File or Start, got {other:?}")),
            }
        }
    }

    /// Starts job `n`'s program and the thread that waits for it.
    fn start(
        self: &Arc<Self>,
        n: u64,
        dir: &Path,
        program: &str,
        args: &[String],
        work: &Path,
    ) -> Result<JobInfo, String> {
        let log_path = dir.join("output.log");
        let log = files::open_private(&log_path, 0o600, true)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let id = format!("job-{n}");
        let mut child = Command::new(dir.join(program))
            .args(args)
            .current_dir(work)
            .env("OXRAY_ADDRESS", &self.address)
            .env("OXRAY_JOB_ID", &id)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {program}: {e}"))?;
        let info = JobInfo {
            job: id.clone(),
            program: program.to_owned(),
            args: args.to_vec(),
            state: JobState::Running,
            pid: child.id(),
            started_ms: now_ms(),
            ended_ms: 0,
            exit: String::new(),
        };
        {
            let mut t = self.table();
            t.jobs.insert(
                n,
                Job {
                    info: info.clone(),
                    dir: dir.to_owned(),
                    stopping: false,
                },
            );
            forget_old(&mut t);
        }
        let me = self.clone();
        let waiter = std::thread::Builder::new()
            .name(format!("oxray-{id}"))
            .spawn(move || {
                let status = child.wait();
                me.ended(n, status);
            });
        if let Err(e) = waiter {
            // Without its waiter the job could never be seen to end: end it now.
            // SAFETY: kill(2) on the process group this node just made; no memory involved.
            unsafe { libc::kill(-(info.pid as i32), libc::SIGKILL) };
            self.table().jobs.remove(&n);
            return Err(format!("starting the job's waiter: {e}"));
        }
        tracing::info!(job = %id, program, pid = info.pid, "job started");
        Ok(info)
    }

    /// Records how job `n` ended.
    fn ended(&self, n: u64, status: std::io::Result<std::process::ExitStatus>) {
        use std::os::unix::process::ExitStatusExt;
        let mut t = self.table();
        if let Some(job) = t.jobs.get_mut(&n) {
            let (state, exit) = match status {
                Ok(s) if s.success() => (JobState::Succeeded, "exit status 0".to_owned()),
                Ok(s) => {
                    let exit = match (s.code(), s.signal()) {
                        (Some(c), _) => format!("exit status {c}"),
                        (None, Some(sig)) => format!("killed by signal {sig}"),
                        _ => "ended".to_owned(),
                    };
                    let state = if job.stopping {
                        JobState::Stopped
                    } else {
                        JobState::Failed
                    };
                    (state, exit)
                }
                Err(e) => (JobState::Failed, format!("could not be waited for: {e}")),
            };
            job.info.state = state;
            job.info.exit = exit;
            job.info.ended_ms = now_ms();
            tracing::info!(job = %job.info.job, exit = %job.info.exit, "job ended");
        }
        drop(t);
        self.ended.notify_all();
    }

    fn find<'t>(t: &'t mut Table, job: &str) -> Result<(u64, &'t mut Job), String> {
        let unknown = || format!("no job {job:?} on this node; `oxray job list` shows its jobs");
        let n: u64 = job
            .strip_prefix("job-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(unknown)?;
        t.jobs.get_mut(&n).map(|j| (n, j)).ok_or_else(unknown)
    }

    fn info(&self, job: &str) -> Result<JobInfo, String> {
        let mut t = self.table();
        Self::find(&mut t, job).map(|(_, j)| j.info.clone())
    }

    /// Sends a job's output; with `follow`, until the job has ended and all it wrote is sent.
    fn logs(&self, stream: &UnixStream, job: &str, follow: bool) -> std::io::Result<()> {
        let path = {
            let mut t = self.table();
            match Self::find(&mut t, job) {
                Ok((_, j)) => j.dir.join("output.log"),
                Err(message) => return reply_error(stream, message),
            }
        };
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => return reply_error(stream, format!("reading {}: {e}", path.display())),
        };
        let watch = if follow {
            match Watch::new(&path) {
                Ok(w) => Some(w),
                Err(message) => return reply_error(stream, message),
            }
        } else {
            None
        };
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            // Whether it ended is read before the file, so nothing written before the end is
            // missed.
            let info = self.info(job).map_err(std::io::Error::other)?;
            loop {
                let n = file.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                frame::write(
                    &mut &*stream,
                    &JobReply::Output {
                        bytes: chunk[..n].to_vec(),
                    },
                )?;
            }
            let Some(watch) = &watch else {
                return frame::write(&mut &*stream, &JobReply::End { info });
            };
            if info.state != JobState::Running {
                return frame::write(&mut &*stream, &JobReply::End { info });
            }
            // Woken by a write; at least once a second to see whether the job ended (its exit
            // writes nothing) and whether the reader is still there.
            if !watch
                .wait(Duration::from_secs(1))
                .map_err(std::io::Error::other)?
                && peer_gone(stream)
            {
                return Ok(());
            }
        }
    }

    /// Stops a job: SIGTERM to its process group, SIGKILL after [`STOP_GRACE`].
    fn stop(&self, job: &str) -> Result<JobInfo, String> {
        let pid = {
            let mut t = self.table();
            let (_, j) = Self::find(&mut t, job)?;
            if j.info.state != JobState::Running {
                return Ok(j.info.clone());
            }
            j.stopping = true;
            j.info.pid as i32
        };
        // SAFETY: kill(2) on the process group of a job this node started and has not reaped
        // (its waiter reaps it and marks it ended under the table's lock, checked above).
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        if !self.wait_end(job, STOP_GRACE)? {
            // SAFETY: as above.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            self.wait_end(job, STOP_GRACE)?;
        }
        self.info(job)
    }

    /// Waits up to `limit` for `job` to end; whether it did.
    fn wait_end(&self, job: &str, limit: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + limit;
        let mut t = self.table();
        loop {
            if Self::find(&mut t, job)?.1.info.state != JobState::Running {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            t = self
                .ended
                .wait_timeout(t, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Kills every running job (the node stops); no job starts after.
    pub(crate) fn stop_all(&self) {
        let pids: Vec<i32> = {
            let mut t = self.table();
            t.closed = true;
            t.jobs
                .values_mut()
                .filter(|j| j.info.state == JobState::Running)
                .map(|j| {
                    j.stopping = true;
                    j.info.pid as i32
                })
                .collect()
        };
        for pid in pids {
            // SAFETY: kill(2) on the process group of a running job this node started.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

/// Forgets the oldest ended jobs past [`MAX_JOBS`], removing their files.
fn forget_old(t: &mut Table) {
    while t.jobs.len() > MAX_JOBS {
        let Some(n) = t
            .jobs
            .iter()
            .find(|(_, j)| j.info.state != JobState::Running)
            .map(|(n, _)| *n)
        else {
            return;
        };
        if let Some(j) = t.jobs.remove(&n) {
            let _ = std::fs::remove_dir_all(&j.dir);
        }
    }
}

fn read(stream: &UnixStream, buf: &mut HeapBytes) -> Result<JobRequest, String> {
    frame::read::<JobRequest, _>(&mut &*stream, buf).map_err(|e| format!("receiving the job: {e}"))
}

/// Receives `size` bytes in `Chunk`s into a new file at `path`; their SHA-256.
fn receive_file(
    stream: &UnixStream,
    buf: &mut HeapBytes,
    path: &Path,
    size: u64,
    executable: bool,
) -> Result<Vec<u8>, String> {
    let mode = if executable { 0o700 } else { 0o600 };
    let mut file = files::open_private(path, mode, true)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut got = 0u64;
    while got < size {
        let JobRequest::Chunk { bytes } = read(stream, buf)? else {
            return Err(format!(
                "{} ended after {got} of its {size} bytes",
                path.display()
            ));
        };
        if bytes.len() > CHUNK || got + bytes.len() as u64 > size {
            return Err(format!("{} is longer than announced", path.display()));
        }
        got += bytes.len() as u64;
        digest.update(&bytes);
        file.write_all(&bytes)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
    Ok(digest.finish().as_ref().to_vec())
}

/// `path` if it is relative and made of plain names only (no `..`, no root).
fn relative_path(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    let plain = !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.contains('\0');
    if !plain {
        return Err(format!(
            "{path:?} is not a relative path of plain names inside the working directory"
        ));
    }
    Ok(p.to_owned())
}

fn reply_error(stream: &UnixStream, message: String) -> std::io::Result<()> {
    frame::write(&mut &*stream, &JobReply::Error { message })
}

/// Whether the other end of `stream` closed it (a zero-length peek without blocking).
fn peer_gone(stream: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a valid buffer on an open socket; MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_dir_paths_stay_inside() {
        assert!(relative_path("data/input.csv").is_ok());
        assert!(relative_path("a").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a/../b", "a\0b"] {
            assert!(relative_path(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
