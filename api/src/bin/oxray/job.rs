//! `oxray job`: hand a driver program to a cluster's head and follow it (Ray's `ray job`).

use std::path::PathBuf;

use clap::Subcommand;
use oxray_raylet::job_client;

/// What `oxray job` does.
#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Upload a program you built and run it on the head as a driver (with OXRAY_ADDRESS set
    /// to the head); then print its output until it ends (unless --no-wait).
    Submit {
        /// A node's local address [default: the head of the cluster of the nodes started here]
        #[arg(long)]
        address: Option<String>,
        /// A directory to upload with it: the program runs in a copy of it.
        #[arg(long, value_name = "DIR")]
        working_dir: Option<PathBuf>,
        /// Return once the job started instead of following its output.
        #[arg(long)]
        no_wait: bool,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "PROGRAM ARGS")]
        command: Vec<String>,
    },
    /// Show a job's state.
    Status {
        /// The job's id (job-N).
        job: String,
        /// A node's local address [default: as for submit]
        #[arg(long)]
        address: Option<String>,
    },
    /// Print a job's output.
    Logs {
        /// The job's id (job-N).
        job: String,
        /// Keep printing until the job ends.
        #[arg(long, short)]
        follow: bool,
        /// A node's local address [default: as for submit]
        #[arg(long)]
        address: Option<String>,
    },
    /// Stop a job (SIGTERM to its processes, SIGKILL 5 s later).
    Stop {
        /// The job's id (job-N).
        job: String,
        /// A node's local address [default: as for submit]
        #[arg(long)]
        address: Option<String>,
    },
    /// List the jobs of the head.
    List {
        /// A node's local address [default: as for submit]
        #[arg(long)]
        address: Option<String>,
    },
}

fn state_line(info: &oxray_common::job_control::JobInfo) -> String {
    let mut line = format!(
        "{}  {}  {} {}  pid {}",
        info.job,
        info.state.as_str(),
        info.program,
        info.args.join(" "),
        info.pid
    );
    if !info.exit.is_empty() {
        line.push_str(&format!("  ({})", info.exit));
    }
    line
}

/// The exit code of `oxray job submit|logs --follow` for a job that ended in `state`.
fn exit_code(state: oxray_common::job_control::JobState) -> i32 {
    use oxray_common::job_control::JobState;
    match state {
        JobState::Succeeded | JobState::Running => 0,
        JobState::Failed | JobState::Stopped => 1,
    }
}

/// Runs `oxray job ...` against the node at `head` (the head's local address); the process's
/// exit code.
pub fn run(
    cmd: JobCmd,
    head: impl Fn(Option<String>) -> Result<String, String>,
) -> Result<i32, String> {
    let e = |e: oxray_raylet::RayletError| e.to_string();
    match cmd {
        JobCmd::Submit {
            address,
            working_dir,
            no_wait,
            command,
        } => {
            let address = head(address)?;
            let (program, args) = command
                .split_first()
                .ok_or("name the program to run after `--`")?;
            let info = job_client::submit(
                &address,
                std::path::Path::new(program),
                args,
                working_dir.as_deref(),
            )
            .map_err(e)?;
            eprintln!(
                "submitted {} (pid {}) to the node at {address}; follow it with \
                 `oxray job logs --follow {}`",
                info.job, info.pid, info.job
            );
            println!("{}", info.job);
            if no_wait {
                return Ok(0);
            }
            let end =
                job_client::logs(&address, &info.job, true, &mut std::io::stdout()).map_err(e)?;
            eprintln!("{}", state_line(&end));
            Ok(exit_code(end.state))
        }
        JobCmd::Status { job, address } => {
            let info = job_client::status(&head(address)?, &job).map_err(e)?;
            println!("{}", state_line(&info));
            Ok(0)
        }
        JobCmd::Logs {
            job,
            follow,
            address,
        } => {
            let end = job_client::logs(&head(address)?, &job, follow, &mut std::io::stdout())
                .map_err(e)?;
            if follow {
                eprintln!("{}", state_line(&end));
                return Ok(exit_code(end.state));
            }
            Ok(0)
        }
        JobCmd::Stop { job, address } => {
            let info = job_client::stop(&head(address)?, &job).map_err(e)?;
            println!("{}", state_line(&info));
            Ok(0)
        }
        JobCmd::List { address } => {
            let jobs = job_client::list(&head(address)?).map_err(e)?;
            if jobs.is_empty() {
                println!("no jobs");
            }
            for info in &jobs {
                println!("{}", state_line(info));
            }
            Ok(0)
        }
    }
}
