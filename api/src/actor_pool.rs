//! `ActorPool`: work spread over a fixed set of actors (Ray's `ray.util.ActorPool`).

use std::collections::{BTreeMap, VecDeque};

use oxray_core_worker::{Actor, ActorHandle, Error, ObjectRef, Result};
use oxray_object_store::Object;

/// A call waiting for a free actor.
type Call<A, R> = Box<dyn FnOnce(&ActorHandle<A>) -> Result<ObjectRef<R>>>;

/// A pool of actors of class `A` whose calls give an `R`: each item is handed to a free actor,
/// the rest wait in order for one to finish. Results come back in submission order
/// ([`ActorPool::get_next`], [`ActorPool::map`]) or as they finish
/// ([`ActorPool::get_next_unordered`], [`ActorPool::map_unordered`]).
///
/// ```no_run
/// # use oxray::prelude::*;
/// # #[oxray::actor] pub struct Doubler {}
/// # #[oxray::actor] impl Doubler { fn new() -> Self { Doubler {} } fn double(&self, x: i64) -> i64 { 2 * x } }
/// # fn main() -> oxray::Result<()> {
/// # let _cluster = oxray::init()?;
/// let actors = (0..4).map(|_| Doubler::remote()).collect::<oxray::Result<Vec<_>>>()?;
/// let mut pool = oxray::ActorPool::new(actors);
/// let doubled: Vec<i64> = pool
///     .map(|a, x| a.double(x), 1..=10)?
///     .collect::<oxray::Result<_>>()?;
/// assert_eq!(doubled[9], 20);
/// # Ok(())
/// # }
/// ```
pub struct ActorPool<A: Actor, R> {
    idle: VecDeque<ActorHandle<A>>,
    /// Calls under way, by submission number.
    running: BTreeMap<u64, (ObjectRef<R>, ActorHandle<A>)>,
    /// Calls waiting for a free actor, oldest first.
    waiting: VecDeque<(u64, Call<A, R>)>,
    /// Results taken out of order, kept for [`ActorPool::get_next`].
    done: BTreeMap<u64, Result<R>>,
    /// The next submission's number, and the next one `get_next` returns.
    next_in: u64,
    next_out: u64,
}

impl<A: Actor, R: Object> ActorPool<A, R> {
    /// A pool over `actors` (all idle).
    pub fn new(actors: impl IntoIterator<Item = ActorHandle<A>>) -> Self {
        ActorPool {
            idle: actors.into_iter().collect(),
            running: BTreeMap::new(),
            waiting: VecDeque::new(),
            done: BTreeMap::new(),
            next_in: 0,
            next_out: 0,
        }
    }

    /// Hands `call` to a free actor, or queues it until one is free. `call` submits one
    /// method call (e.g. `|a| a.step(x)`); its submission error is returned here when it runs
    /// at once, else by the `get_next` that reaches it.
    pub fn submit(
        &mut self,
        call: impl FnOnce(&ActorHandle<A>) -> Result<ObjectRef<R>> + 'static,
    ) -> Result<()> {
        if self.idle.is_empty() && self.running.is_empty() {
            return Err(Error::Config {
                message: "the actor pool has no actors: give it some with ActorPool::new or push"
                    .into(),
            });
        }
        let n = self.next_in;
        self.next_in += 1;
        match self.idle.pop_front() {
            Some(actor) => match call(&actor) {
                Ok(r) => {
                    self.running.insert(n, (r, actor));
                    Ok(())
                }
                Err(e) => {
                    // Not submitted: nothing to take for it later.
                    self.idle.push_front(actor);
                    Err(e)
                }
            },
            None => {
                self.waiting.push_back((n, Box::new(call)));
                Ok(())
            }
        }
    }

    /// Whether results are still to be taken.
    pub fn has_next(&self) -> bool {
        !self.running.is_empty() || !self.waiting.is_empty() || !self.done.is_empty()
    }

    /// The result of the oldest submission not taken yet (waiting for it).
    pub fn get_next(&mut self) -> Option<Result<R>> {
        // A bounded loop: each turn finishes one running call.
        while self.has_next() {
            // Skip numbers already taken by `get_next_unordered`.
            while self.next_out < self.next_in
                && !self.done.contains_key(&self.next_out)
                && !self.running.contains_key(&self.next_out)
                && !self.waiting.iter().any(|(n, _)| *n == self.next_out)
            {
                self.next_out += 1;
            }
            let n = self.next_out;
            if let Some(result) = self.done.remove(&n) {
                self.next_out += 1;
                return Some(result);
            }
            if let Some((r, actor)) = self.running.remove(&n) {
                let result = crate::get(&r);
                self.free(actor);
                self.next_out += 1;
                return Some(result);
            }
            // Still waiting for an actor: let the first call to finish free one.
            let (m, result) = self.finish_any()?;
            if m == u64::MAX {
                // Waiting itself failed (oxray stopped): say so rather than wait again.
                return Some(result);
            }
            self.done.insert(m, result);
        }
        None
    }

    /// The result of whichever submission finishes first (or was finished already).
    pub fn get_next_unordered(&mut self) -> Option<Result<R>> {
        if let Some((_, result)) = self.done.pop_first() {
            return Some(result);
        }
        self.finish_any().map(|(_, result)| result)
    }

    /// Waits for any running call, frees its actor; its number and result.
    fn finish_any(&mut self) -> Option<(u64, Result<R>)> {
        if self.running.is_empty() {
            return None;
        }
        let refs: Vec<ObjectRef<R>> = self.running.values().map(|(r, _)| r.clone()).collect();
        let first = match crate::wait(&refs, 1, None) {
            Ok((ready, _)) => ready.into_iter().next(),
            Err(e) => return Some((u64::MAX, Err(e))),
        }?;
        let n = *self.running.iter().find(|(_, (r, _))| *r == first)?.0;
        let (r, actor) = self.running.remove(&n)?;
        let result = crate::get(&r);
        self.free(actor);
        Some((n, result))
    }

    /// Puts `actor` back, handing it the oldest waiting call.
    fn free(&mut self, actor: ActorHandle<A>) {
        match self.waiting.pop_front() {
            Some((n, call)) => match call(&actor) {
                Ok(r) => {
                    self.running.insert(n, (r, actor));
                }
                Err(e) => {
                    self.done.insert(n, Err(e));
                    self.free(actor);
                }
            },
            None => self.idle.push_back(actor),
        }
    }

    /// Adds an actor to the pool (it takes the oldest waiting call, if any).
    pub fn push(&mut self, actor: ActorHandle<A>) {
        self.free(actor);
    }

    /// Takes an idle actor out of the pool, if one is idle.
    pub fn pop_idle(&mut self) -> Option<ActorHandle<A>> {
        self.idle.pop_front()
    }

    /// Submits `call(actor, item)` for every item and returns their results in order, each as
    /// it is taken (the pool keeps every actor busy meanwhile).
    pub fn map<V: 'static>(
        &mut self,
        call: impl Fn(&ActorHandle<A>, V) -> Result<ObjectRef<R>> + Clone + 'static,
        items: impl IntoIterator<Item = V>,
    ) -> Result<impl Iterator<Item = Result<R>> + '_> {
        let n = self.submit_all(call, items)?;
        Ok((0..n).map_while(move |_| self.get_next()))
    }

    /// As [`ActorPool::map`], the results in the order they finish.
    pub fn map_unordered<V: 'static>(
        &mut self,
        call: impl Fn(&ActorHandle<A>, V) -> Result<ObjectRef<R>> + Clone + 'static,
        items: impl IntoIterator<Item = V>,
    ) -> Result<impl Iterator<Item = Result<R>> + '_> {
        let n = self.submit_all(call, items)?;
        Ok((0..n).map_while(move |_| self.get_next_unordered()))
    }

    fn submit_all<V: 'static>(
        &mut self,
        call: impl Fn(&ActorHandle<A>, V) -> Result<ObjectRef<R>> + Clone + 'static,
        items: impl IntoIterator<Item = V>,
    ) -> Result<usize> {
        let mut n = 0;
        for item in items {
            let call = call.clone();
            self.submit(move |a| call(a, item))?;
            n += 1;
        }
        Ok(n)
    }
}
