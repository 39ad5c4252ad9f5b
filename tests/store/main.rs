//! Integration tests of the object store across real processes.

mod multiprocess;
