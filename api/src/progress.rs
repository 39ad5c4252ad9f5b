//! `progress(refs)`: the refs back in the order they finish, with a progress display.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use oxray_core_worker::{ObjectRef, Result};

use crate::runtime::wait;

/// What [`progress`] returns: an iterator over the refs, each once, in the order they finish.
pub struct Progress<T> {
    pending: Vec<ObjectRef<T>>,
    ready: std::vec::IntoIter<ObjectRef<T>>,
    total: usize,
    done: usize,
    display: Display,
}

enum Display {
    /// A bar redrawn in place (stderr is a terminal).
    #[cfg(feature = "progress")]
    Bar(indicatif::ProgressBar),
    /// A line every tenth of the way (and at the end), for logs and pipes.
    Lines {
        label: String,
        started: Instant,
        next: usize,
    },
}

/// Returns `refs` one by one as their tasks finish (`for r in oxray::progress("simulations",
/// refs) { let x = oxray::get(&r)?; ... }`), showing how many are done: a bar with the rate and
/// time left when stderr is a terminal, else a plain line every tenth of the way. An error from
/// waiting ends the iteration with that error.
pub fn progress<T>(label: &str, refs: Vec<ObjectRef<T>>) -> Progress<T> {
    let total = refs.len();
    let display = if std::io::stderr().is_terminal() {
        terminal_display(label, total)
    } else {
        Display::Lines {
            label: label.to_owned(),
            started: Instant::now(),
            next: 0,
        }
    };
    Progress {
        pending: refs,
        ready: Vec::new().into_iter(),
        total,
        done: 0,
        display,
    }
}

#[cfg(feature = "progress")]
fn terminal_display(label: &str, total: usize) -> Display {
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.set_message(label.to_owned());
    Display::Bar(bar)
}

#[cfg(not(feature = "progress"))]
fn terminal_display(label: &str, _total: usize) -> Display {
    Display::Lines {
        label: label.to_owned(),
        started: Instant::now(),
        next: 0,
    }
}

impl<T> Progress<T> {
    fn show(&mut self) {
        match &mut self.display {
            #[cfg(feature = "progress")]
            Display::Bar(bar) => {
                bar.set_position(self.done as u64);
                if self.done == self.total {
                    // The bar goes; one plain line stays (the bar's last state can share its
                    // line with whatever the program prints next).
                    let secs = bar.elapsed().as_secs_f64();
                    bar.finish_and_clear();
                    eprintln!(
                        "{}: {}/{} done ({secs:.1} s)",
                        bar.message(),
                        self.done,
                        self.total
                    );
                }
            }
            Display::Lines {
                label,
                started,
                next,
            } => {
                if self.done >= *next || self.done == self.total {
                    eprintln!(
                        "{label}: {}/{} done ({:.1} s)",
                        self.done,
                        self.total,
                        started.elapsed().as_secs_f64()
                    );
                    *next = self.done + (self.total / 10).max(1);
                }
            }
        }
    }
}

impl<T> Iterator for Progress<T> {
    type Item = Result<ObjectRef<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(r) = self.ready.next() {
            self.done += 1;
            self.show();
            return Some(Ok(r));
        }
        if self.pending.is_empty() {
            return None;
        }
        // One to finish, then every other already finished, in one batch.
        let pending = std::mem::take(&mut self.pending);
        let (mut ready, rest) = match wait(&pending, 1, None) {
            Ok(w) => w,
            Err(e) => return Some(Err(e)),
        };
        let (more, rest) = match wait(&rest, rest.len(), Some(Duration::ZERO)) {
            Ok(w) => w,
            Err(e) => return Some(Err(e)),
        };
        ready.extend(more);
        self.pending = rest;
        self.ready = ready.into_iter();
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total - self.done;
        (left, Some(left))
    }
}
