//! fec (work in progress)
