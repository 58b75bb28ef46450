//! Running a pure function over many items on every core, and two jobs side by side, for the
//! full builds of links and cliques (the incremental paths stay on the committer's thread).

/// `f` applied to each item, in the items' order, the work split evenly across the cores. A
/// panic in `f` is re-raised here.
pub fn map_on_all_cores<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let parts = map_on_all_cores_keeping(items, || (), |(), item| f(item));
    let mut results = Vec::with_capacity(items.len());
    for ((), part) in parts {
        results.extend(part);
    }
    results
}

/// Like [`map_on_all_cores`], with a state each thread makes once (`init`) and passes to every
/// call — buffers that would otherwise be allocated per item, or that gather what the calls
/// add — and gives back each thread's part: its final state and its results, parts in the
/// items' order.
pub fn map_on_all_cores_keeping<T: Sync, S: Send, R: Send>(
    items: &[T],
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<(S, Vec<R>)> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = items.len().div_ceil(threads).max(1);
    let (init, f) = (&init, &f);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut state = init();
                    let results = part
                        .iter()
                        .map(|item| f(&mut state, item))
                        .collect::<Vec<R>>();
                    (state, results)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
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
    fn each_thread_keeps_its_state_and_gives_it_back() {
        let items: Vec<u32> = (0..1001).collect();
        // A running count per thread: within a thread's part, calls see the state grow, and
        // the state given back is the part's length.
        let parts = super::map_on_all_cores_keeping(
            &items,
            || 0u32,
            |calls, &i| {
                *calls += 1;
                (i, *calls)
            },
        );
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(
            parts.len(),
            items.chunks(items.len().div_ceil(threads)).count()
        );
        for (calls, part) in &parts {
            assert_eq!(*calls as usize, part.len());
            assert!(
                part.iter()
                    .enumerate()
                    .all(|(n, &(_, c))| c as usize == n + 1)
            );
        }
        let seen: Vec<u32> = parts
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(i, _)| i))
            .collect();
        assert_eq!(seen, items);
    }

    #[test]
    fn runs_both_jobs() {
        assert_eq!(super::alongside(|| 1, || "two"), (1, "two"));
    }
}
