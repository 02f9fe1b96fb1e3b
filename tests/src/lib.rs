//! Integration tests live in tests/*.rs and tests/*.sh.
