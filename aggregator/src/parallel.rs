//! Running a pure function over many items on every core, and two jobs side by side, for the
//! full builds of links and cliques (the incremental paths stay on the committer's thread).

/// `f` applied to each item, in the items' order, the work split evenly across the cores. A
/// panic in `f` is re-raised here.
pub fn map_on_all_cores<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    map_on_all_cores_with(items, || (), |(), item| f(item))
}

/// Like [`map_on_all_cores`], with a state each thread makes once (`init`) and passes to every
/// call: scratch buffers that would otherwise be allocated per item.
pub fn map_on_all_cores_with<T: Sync, S, R: Send>(
    items: &[T],
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = items.len().div_ceil(threads).max(1);
    let (init, f) = (&init, &f);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut state = init();
                    part.iter()
                        .map(|item| f(&mut state, item))
                        .collect::<Vec<R>>()
                })
            })
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
    fn each_thread_keeps_its_state() {
        let items: Vec<u32> = (0..1001).collect();
        // A running count per thread: within a thread's part, calls see the state grow.
        let seen = super::map_on_all_cores_with(
            &items,
            || 0u32,
            |calls, &i| {
                *calls += 1;
                (i, *calls)
            },
        );
        assert_eq!(seen.iter().map(|&(i, _)| i).collect::<Vec<_>>(), items);
        assert!(seen.windows(2).all(|w| w[1].1 == w[0].1 + 1 || w[1].1 == 1));
        assert_eq!(seen.iter().filter(|&&(_, calls)| calls == 1).count(), {
            let threads = std::thread::available_parallelism().map_or(1, usize::from);
            items.chunks(items.len().div_ceil(threads)).count()
        });
    }

    #[test]
    fn runs_both_jobs() {
        assert_eq!(super::alongside(|| 1, || "two"), (1, "two"));
    }
}
