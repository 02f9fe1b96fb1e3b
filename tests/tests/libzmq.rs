//! The system libzmq is linked (not the vendored copy) and has CURVE.

#[test]
fn libzmq_has_curve() {
    assert!(zmq::has("curve").unwrap_or(false), "libzmq lacks CURVE: link the system libzmq (see .cargo/config.toml)");
}

#[test]
fn libzmq_is_recent_enough() {
    let (major, minor, _) = zmq::version();
    assert!((major, minor) >= (4, 3), "libzmq {major}.{minor} is older than 4.3");
}
