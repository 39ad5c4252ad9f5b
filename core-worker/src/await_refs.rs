//! Awaiting objects: `ObjectRef<T>` is a future (`r.await` or `(&r).await` gives
//! `Result<T>`), and [`GetView`], [`GetAll`] and [`Wait`] are the async forms of `get_view`,
//! `get_all` and `wait`.
//!
//! They are woken by the core worker's own events, not by polling: a future whose object is
//! pending leaves its waker in the ref table, and the thread that settles the object (a task's
//! reply, an owner's answer, the raylet's loss) wakes it. They work on any executor (tokio,
//! smol, a plain `block_on`), and dropping one mid-wait takes its waker back.
//!
//! Once an object is ready, reading it is what the blocking calls do: a small value is here
//! already, a stored one is pinned with one request to the local raylet (tens of µs), and an
//! object spilled to disk or lost with its node is restored or rebuilt first, which blocks the
//! polling thread meanwhile (as Ray's `await ref` does in its event loop).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use oxray_object_store::{Object, ObjectId, ObjectView};

use crate::core::CoreWorker;
use crate::error::Result;
use crate::object_ref::ObjectRef;

/// Waits on a set of ids: asks their owners once (borrowed ones), then leaves the task's
/// waker on ids still pending.
pub(crate) struct Waiting {
    core: Arc<CoreWorker>,
    ids: Vec<ObjectId>,
    /// Ids known done (done is final while a ref is held).
    done: Vec<bool>,
    /// The first id not known done, for [`Waiting::poll_all`].
    next: usize,
    started: bool,
    /// The waker left in the ref table, and on which ids (taken back on drop, or when the
    /// task's waker changes).
    waker: Option<Waker>,
    on: Vec<bool>,
}

impl Waiting {
    pub(crate) fn new(core: Arc<CoreWorker>, ids: Vec<ObjectId>) -> Waiting {
        let n = ids.len();
        Waiting {
            core,
            ids,
            done: vec![false; n],
            next: 0,
            started: false,
            waker: None,
            on: vec![false; n],
        }
    }

    /// Asks the owners of borrowed ids once, and takes back a waker the task no longer uses.
    fn begin(&mut self, waker: &Waker) {
        if !self.started {
            self.started = true;
            for id in &self.ids {
                self.core.ensure_fetch(*id);
            }
        }
        if self.waker.as_ref().is_some_and(|w| !w.will_wake(waker)) {
            self.forget();
        }
    }

    /// Whether id `i` is done; if not, the task is woken when it is.
    fn check(&mut self, i: usize, waker: &Waker) -> bool {
        if !self.done[i] {
            self.done[i] = self.core.refs.poll_done(self.ids[i], waker);
            if !self.done[i] {
                self.on[i] = true;
                if self.waker.is_none() {
                    self.waker = Some(waker.clone());
                }
            }
        }
        self.done[i]
    }

    /// Whether all are done. Waits on one pending id at a time (all must be done anyway), so
    /// awaiting n refs costs O(n), not a scan of all of them at every wake-up.
    fn poll_all(&mut self, cx: &Context<'_>) -> bool {
        self.begin(cx.waker());
        while self.next < self.ids.len() {
            if !self.check(self.next, cx.waker()) {
                return false;
            }
            self.next += 1;
        }
        true
    }

    /// How many are done now; the task is woken when another one is.
    pub(crate) fn poll_count(&mut self, cx: &Context<'_>) -> usize {
        self.begin(cx.waker());
        (0..self.ids.len())
            .filter(|&i| self.check(i, cx.waker()))
            .count()
    }

    /// Takes back the waker left on ids still pending.
    fn forget(&mut self) {
        if let Some(waker) = self.waker.take() {
            for (id, on) in self.ids.iter().zip(self.on.iter_mut()) {
                if std::mem::take(on) {
                    self.core.refs.forget_waker(*id, &waker);
                }
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.forget();
    }
}

/// Waits on one id (no allocation: the common `r.await`).
struct WaitOne {
    started: bool,
    /// The waker left in the ref table, taken back on drop.
    waker: Option<Waker>,
}

impl WaitOne {
    const fn new() -> WaitOne {
        WaitOne {
            started: false,
            waker: None,
        }
    }

    /// Whether `id` is done; if not, the task is woken when it is.
    fn poll(&mut self, core: &Arc<CoreWorker>, id: ObjectId, cx: &Context<'_>) -> bool {
        if !self.started {
            self.started = true;
            core.ensure_fetch(id);
        }
        let waker = cx.waker();
        if let Some(old) = self.waker.take_if(|w| !w.will_wake(waker)) {
            core.refs.forget_waker(id, &old);
        }
        if core.refs.poll_done(id, waker) {
            self.waker = None;
            return true;
        }
        if self.waker.is_none() {
            self.waker = Some(waker.clone());
        }
        false
    }

    fn forget(&mut self, core: &Arc<CoreWorker>, id: ObjectId) {
        if let Some(w) = self.waker.take() {
            core.refs.forget_waker(id, &w);
        }
    }
}

/// `r.await`: the object's value (see the module docs).
pub struct Get<T> {
    r: ObjectRef<T>,
    waiting: WaitOne,
}

impl<T: Object> Future for Get<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        if !this.waiting.poll(&this.r.core, this.r.id(), cx) {
            return Poll::Pending;
        }
        Poll::Ready(this.r.core.get(&this.r, None))
    }
}

impl<T> Drop for Get<T> {
    fn drop(&mut self) {
        self.waiting.forget(&self.r.core, self.r.id());
    }
}

impl<T: Object> IntoFuture for ObjectRef<T> {
    type Output = Result<T>;
    type IntoFuture = Get<T>;

    fn into_future(self) -> Get<T> {
        Get {
            r: self,
            waiting: WaitOne::new(),
        }
    }
}

/// `(&r).await`: the object's value, the ref kept by its owner (see the module docs).
pub struct GetRef<'a, T> {
    r: &'a ObjectRef<T>,
    waiting: WaitOne,
}

impl<T: Object> Future for GetRef<'_, T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        if !this.waiting.poll(&this.r.core, this.r.id(), cx) {
            return Poll::Pending;
        }
        Poll::Ready(this.r.core.get(this.r, None))
    }
}

impl<T> Drop for GetRef<'_, T> {
    fn drop(&mut self) {
        self.waiting.forget(&self.r.core, self.r.id());
    }
}

impl<'a, T: Object> IntoFuture for &'a ObjectRef<T> {
    type Output = Result<T>;
    type IntoFuture = GetRef<'a, T>;

    fn into_future(self) -> GetRef<'a, T> {
        GetRef {
            r: self,
            waiting: WaitOne::new(),
        }
    }
}

/// The async form of `get_view`: a zero-copy view once the object is ready.
pub struct GetView<T> {
    r: ObjectRef<T>,
    waiting: WaitOne,
}

impl<T> GetView<T> {
    /// A future of a view of `r`'s object.
    pub fn new(r: &ObjectRef<T>) -> GetView<T> {
        GetView {
            r: r.clone(),
            waiting: WaitOne::new(),
        }
    }
}

impl<T: Object> Future for GetView<T> {
    type Output = Result<ObjectView<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if !this.waiting.poll(&this.r.core, this.r.id(), cx) {
            return Poll::Pending;
        }
        Poll::Ready(this.r.core.get_view(&this.r, None))
    }
}

impl<T> Drop for GetView<T> {
    fn drop(&mut self) {
        self.waiting.forget(&self.r.core, self.r.id());
    }
}

/// The async form of `get_all`: every value, in order, once all are ready (the first error
/// otherwise).
pub struct GetAll<T> {
    refs: Vec<ObjectRef<T>>,
    waiting: Option<Waiting>,
}

impl<T> GetAll<T> {
    /// A future of the values of `refs`.
    pub fn new(refs: &[ObjectRef<T>]) -> GetAll<T> {
        let waiting = refs
            .first()
            .map(|r| Waiting::new(r.core.clone(), refs.iter().map(|r| r.id()).collect()));
        GetAll {
            refs: refs.to_vec(),
            waiting,
        }
    }
}

impl<T: Object> Future for GetAll<T> {
    type Output = Result<Vec<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(waiting) = &mut this.waiting else {
            return Poll::Ready(Ok(Vec::new()));
        };
        if !waiting.poll_all(cx) {
            return Poll::Pending;
        }
        Poll::Ready(this.refs.iter().map(|r| r.core.get(r, None)).collect())
    }
}

/// The async form of `wait` (without a timeout: race it with your executor's timer, e.g.
/// `tokio::time::timeout`): `(ready, not_ready)` once `num` of the refs are ready or failed.
pub struct Wait<T> {
    refs: Vec<ObjectRef<T>>,
    num: usize,
    waiting: Option<Waiting>,
}

impl<T> Wait<T> {
    /// A future that resolves when `num` (at most all) of `refs` are done.
    pub fn new(refs: &[ObjectRef<T>], num: usize) -> Wait<T> {
        let waiting = refs
            .first()
            .map(|r| Waiting::new(r.core.clone(), refs.iter().map(|r| r.id()).collect()));
        Wait {
            refs: refs.to_vec(),
            num: num.min(refs.len()),
            waiting,
        }
    }
}

impl<T> Future for Wait<T> {
    type Output = (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(waiting) = &mut this.waiting else {
            return Poll::Ready((Vec::new(), Vec::new()));
        };
        if waiting.poll_count(cx) < this.num {
            return Poll::Pending;
        }
        let done = waiting.done.clone();
        waiting.forget();
        let (ready, not_ready): (Vec<_>, Vec<_>) =
            this.refs.iter().cloned().zip(done).partition(|(_, d)| *d);
        Poll::Ready((
            ready.into_iter().map(|(r, _)| r).collect(),
            not_ready.into_iter().map(|(r, _)| r).collect(),
        ))
    }
}
