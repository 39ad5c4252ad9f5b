//! The command's side of submitted jobs (`oxray job submit|status|logs|stop|list`): each call
//! opens a job-control connection to a node's local socket (see `submitted_jobs` for the
//! node's side and `oxray_common::job_control` for the messages).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use oxray_common::frame;
use oxray_common::job_control::{JobInfo, JobReply, JobRequest, CHUNK};
use oxray_common::protocol::ToRaylet;
use oxray_object_store::HeapBytes;

use crate::error::{RayletError, Result};
use crate::server::connect;

/// The most files sent from a working directory (the node refuses more).
pub const MAX_FILES: usize = crate::submitted_jobs::MAX_FILES;

fn open(address: &str) -> Result<UnixStream> {
    let mut stream = connect(address)
        .map_err(|e| RayletError::io(format!("cannot reach the oxray node at {address}"), e))?;
    frame::write(&mut stream, &ToRaylet::Jobs)
        .map_err(|e| RayletError::io(format!("writing to {address}"), e))?;
    Ok(stream)
}

fn send(stream: &mut UnixStream, request: &JobRequest) -> Result<()> {
    frame::write(stream, request).map_err(|e| RayletError::io("sending to the node", e))
}

fn receive(stream: &mut UnixStream, buf: &mut HeapBytes) -> Result<JobReply> {
    match frame::read::<JobReply, _>(stream, buf) {
        Ok(JobReply::Error { message }) => Err(RayletError::Job(message)),
        Ok(reply) => Ok(reply),
        Err(e) => Err(RayletError::io(
            "reading the node's answer",
            std::io::Error::other(e.to_string()),
        )),
    }
}

fn unexpected(reply: JobReply) -> RayletError {
    RayletError::Job(format!("unexpected answer from the node: {reply:?}"))
}

/// Sends the file at `path` in `Chunk`s.
fn send_file(stream: &mut UnixStream, path: &Path, size: u64) -> Result<()> {
    let io = |e| RayletError::io(format!("reading {}", path.display()), e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut chunk = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < size {
        let want = CHUNK.min((size - sent) as usize);
        file.read_exact(&mut chunk[..want]).map_err(io)?;
        send(
            stream,
            &JobRequest::Chunk {
                bytes: chunk[..want].to_vec(),
            },
        )?;
        sent += want as u64;
    }
    Ok(())
}

/// The regular files under `dir` as (path relative to `dir`, full path, size, executable),
/// symbolic links left out; at most [`MAX_FILES`].
fn working_dir_files(dir: &Path) -> Result<Vec<(String, PathBuf, u64, bool)>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let io = |e| RayletError::io(format!("reading the working directory {}", d.display()), e);
        for entry in std::fs::read_dir(&d).map_err(io)? {
            let entry = entry.map_err(io)?;
            let kind = entry.file_type().map_err(io)?;
            let path = entry.path();
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_file() {
                let meta = entry.metadata().map_err(io)?;
                let relative = path
                    .strip_prefix(dir)
                    .ok()
                    .and_then(|p| p.to_str())
                    .ok_or_else(|| {
                        RayletError::Job(format!(
                            "{} has a name that is not UTF-8; rename it or leave it out",
                            path.display()
                        ))
                    })?
                    .to_owned();
                let executable = meta.permissions().mode() & 0o111 != 0;
                out.push((relative, path, meta.len(), executable));
                if out.len() > MAX_FILES {
                    return Err(RayletError::Job(format!(
                        "the working directory {} has more than {MAX_FILES} files",
                        dir.display()
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// Uploads `program` (a file on this machine) and the files of `working_dir` to the node at
/// `address` and starts it there with `args`.
pub fn submit(
    address: &str,
    program: &Path,
    args: &[String],
    working_dir: Option<&Path>,
) -> Result<JobInfo> {
    let io = |e| RayletError::io(format!("reading the program {}", program.display()), e);
    let meta = std::fs::metadata(program).map_err(io)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(RayletError::Job(format!(
            "{} is not an executable file: submit a program you built (e.g. \
             target/release/examples/quickstart)",
            program.display()
        )));
    }
    let name = program
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| RayletError::Job(format!("{} has no usable name", program.display())))?
        .to_owned();
    let (hash, size) =
        crate::files::sha256(std::fs::File::open(program).map_err(io)?).map_err(io)?;
    let sha256 = (0..hash.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hash[i..i + 2], 16).ok())
        .collect();
    let files = match working_dir {
        Some(d) => working_dir_files(d)?,
        None => Vec::new(),
    };
    let mut stream = open(address)?;
    let upload = |stream: &mut UnixStream| -> Result<()> {
        send(
            stream,
            &JobRequest::Submit {
                program: name,
                args: args.to_vec(),
                size,
                sha256,
            },
        )?;
        send_file(stream, program, size)?;
        for (relative, path, size, executable) in files {
            send(
                stream,
                &JobRequest::File {
                    path: relative,
                    size,
                    executable,
                },
            )?;
            send_file(stream, &path, size)?;
        }
        send(stream, &JobRequest::Start)
    };
    let uploaded = upload(&mut stream);
    // The node answers a refusal at the first problem and closes the connection, so a failed
    // write is explained by the answer waiting to be read.
    match (receive(&mut stream, &mut HeapBytes::new()), uploaded) {
        (Ok(JobReply::Submitted { info }), Ok(())) => Ok(info),
        (Err(RayletError::Job(refused)), _) => Err(RayletError::Job(refused)),
        (_, Err(e)) => Err(e),
        (Ok(other), Ok(())) => Err(unexpected(other)),
        (Err(e), Ok(())) => Err(e),
    }
}

/// The state of job `job` on the node at `address`.
pub fn status(address: &str, job: &str) -> Result<JobInfo> {
    let mut stream = open(address)?;
    send(&mut stream, &JobRequest::Status { job: job.into() })?;
    match receive(&mut stream, &mut HeapBytes::new())? {
        JobReply::Info { info } => Ok(info),
        other => Err(unexpected(other)),
    }
}

/// Every job of the node at `address`, oldest first.
pub fn list(address: &str) -> Result<Vec<JobInfo>> {
    let mut stream = open(address)?;
    send(&mut stream, &JobRequest::List)?;
    match receive(&mut stream, &mut HeapBytes::new())? {
        JobReply::List { jobs } => Ok(jobs),
        other => Err(unexpected(other)),
    }
}

/// Stops job `job` (SIGTERM, then SIGKILL after 5 s); its state after.
pub fn stop(address: &str, job: &str) -> Result<JobInfo> {
    let mut stream = open(address)?;
    send(&mut stream, &JobRequest::Stop { job: job.into() })?;
    match receive(&mut stream, &mut HeapBytes::new())? {
        JobReply::Info { info } => Ok(info),
        other => Err(unexpected(other)),
    }
}

/// Writes job `job`'s output to `out`: what it wrote so far, and with `follow` everything until
/// it ends. Returns its state at the end.
pub fn logs(address: &str, job: &str, follow: bool, out: &mut impl Write) -> Result<JobInfo> {
    let mut stream = open(address)?;
    send(
        &mut stream,
        &JobRequest::Logs {
            job: job.into(),
            follow,
        },
    )?;
    let mut buf = HeapBytes::new();
    loop {
        match receive(&mut stream, &mut buf)? {
            JobReply::Output { bytes } => {
                out.write_all(&bytes)
                    .and_then(|()| out.flush())
                    .map_err(|e| RayletError::io("writing the job's output", e))?;
            }
            JobReply::End { info } => return Ok(info),
            other => return Err(unexpected(other)),
        }
    }
}
