//! The `cns` binary is linked as a position-dependent executable: its code
//! stays position-independent, but the linker resolves the relocations a
//! PIE would leave to the dynamic loader. cns runs once per command and at
//! every workload launch, and those relocations (tens of thousands in a 7 MB
//! binary) were about half a millisecond of each start.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
