//! Integration tests of the object store across real processes.

mod fuzz_corpus;
mod multiprocess;
