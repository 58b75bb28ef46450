//! Running a pure function over many items on every core, and two jobs side by side, for the
//! full builds of links and cliques (the incremental paths stay on the committer's thread).

/// `f` applied to each item, in the items' order, the work split evenly across the cores. A
/// panic in `f` is re-raised here.
pub fn map_on_all_cores<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Runs `background` on another thread while `foreground` runs on this one; returns both
/// results. A panic in either is re-raised here.
pub fn alongside<A, B: Send>(
    foreground: impl FnOnce() -> A,
    background: impl FnOnce() -> B + Send,
) -> (A, B) {
    std::thread::scope(|scope| {
        let other = scope.spawn(background);
        let here = foreground();
        let there = other
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (here, there)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_the_order_of_the_items() {
        let items: Vec<u32> = (0..1001).collect();
        let doubled = super::map_on_all_cores(&items, |i| i * 2);
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(super::map_on_all_cores(&[] as &[u32], |i| *i).is_empty());
    }

    #[test]
    fn runs_both_jobs() {
        assert_eq!(super::alongside(|| 1, || "two"), (1, "two"));
    }
}
