//! trust (work in progress)
