//! The compile errors of the common mistakes say what to do in plain words (pinned with
//! trybuild: `TRYBUILD=overwrite cargo test -p oxray --test compile_errors` regenerates the
//! expected `.stderr` files after a deliberate change).

#[test]
fn common_mistakes_get_plain_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
