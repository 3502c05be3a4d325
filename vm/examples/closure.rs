//! Prints the module closure of overlay and fuse for a cached kernel: `cargo run -p vm --example closure DIR`.
fn main() {
    let dir = std::env::args().nth(1).expect("give a modules/<release> directory");
    let t = vm::modules::ModuleTree::open(std::path::Path::new(&dir)).expect("module tree");
    for (n, p) in t.closure(&["overlay", "fuse"]).expect("closure") {
        println!("{n} {}", p.display());
    }
}
