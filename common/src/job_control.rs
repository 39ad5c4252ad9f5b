//! Submitted jobs (`oxray job ...`): the messages between the command and the node that runs
//! the jobs.
//!
//! A connection to a raylet's local socket whose first message is `ToRaylet::Jobs` carries
//! these frames from then on, served on a thread of their own (never on the node's event
//! loop). A submission is `Submit`, the program's bytes in `Chunk`s, each working-directory file
//! as a `File` followed by its `Chunk`s, and `Start`; the node answers `Submitted` (or `Error`
//! at the first problem, and forgets the half-made job).

// rkyv derives an undocumented `Archived*` twin of every type here.
#![allow(missing_docs)]

use rkyv::{Archive, Deserialize, Serialize};

/// The largest piece of a file in one `Chunk` (frames are at most 64 MiB).
pub const CHUNK: usize = 4 << 20;

/// What the command asks.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum JobRequest {
    /// Run a program as a driver on this node; its bytes follow in `Chunk`s.
    Submit {
        /// The program's file name (no directories).
        program: String,
        /// Its arguments.
        args: Vec<String>,
        /// Its size in bytes.
        size: u64,
        /// Its SHA-256, checked once it is all here.
        sha256: Vec<u8>,
    },
    /// A file of the working directory (a relative path of plain names); its bytes follow.
    File {
        /// Where it goes in the working directory.
        path: String,
        /// Its size in bytes.
        size: u64,
        /// Whether it may be run.
        executable: bool,
    },
    /// Bytes of the program or of the last `File`.
    Chunk {
        /// At most [`CHUNK`] of them.
        bytes: Vec<u8>,
    },
    /// Everything is here: start the job.
    Start,
    /// The state of a job.
    Status {
        /// The job's id.
        job: String,
    },
    /// Every job this node ran or runs.
    List,
    /// A job's output: what it wrote so far, and with `follow` what it writes until it ends.
    Logs {
        /// The job's id.
        job: String,
        /// Keep sending until the job ends.
        follow: bool,
    },
    /// Stop a job (SIGTERM to its process group, SIGKILL if it is still there 5 s later).
    Stop {
        /// The job's id.
        job: String,
    },
}

/// What the node answers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum JobReply {
    /// The job started.
    Submitted {
        /// The job.
        info: JobInfo,
    },
    /// The state of one job.
    Info {
        /// The job.
        info: JobInfo,
    },
    /// Every job, oldest first.
    List {
        /// The jobs.
        jobs: Vec<JobInfo>,
    },
    /// Some of a job's output.
    Output {
        /// What it wrote.
        bytes: Vec<u8>,
    },
    /// The output sent was all there is (for now, without `follow`).
    End {
        /// The job's state.
        info: JobInfo,
    },
    /// The request failed.
    Error {
        /// What went wrong and what to do.
        message: String,
    },
}

/// Where a job is in its life.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum JobState {
    /// Its program runs.
    Running,
    /// It exited with status 0.
    Succeeded,
    /// It exited with another status, or was killed by a signal nobody sent through `Stop`.
    Failed,
    /// It was stopped with `oxray job stop`.
    Stopped,
}

impl JobState {
    /// The state in lower case, as the command prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Stopped => "stopped",
        }
    }
}

/// One job.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobInfo {
    /// Its id (`job-N`).
    pub job: String,
    /// The program's file name.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Where it is in its life.
    pub state: JobState,
    /// Its process (the leader of its process group).
    pub pid: u32,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// When it ended (0: it runs).
    pub ended_ms: u64,
    /// How it ended: the exit status, or the signal (`killed by signal 9`); empty while it runs.
    pub exit: String,
}
