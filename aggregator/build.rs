//! The store's migrations are embedded by `sqlx::migrate!`, which does not see a new file in
//! their directories by itself: rebuild when they change.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
