//! Links the `shoplake` executable at a fixed address on Linux (`-no-pie`): a PIE of this
//! size carries ~300 k relocations that the loader applies at every start, copying ~5 MB of
//! pages, which was a third of a 50 ms report. The code itself is unchanged (position
//! independent), only the final link resolves the addresses once.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
