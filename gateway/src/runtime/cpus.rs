//! Which of the machine's CPUs a desktop may run on (its `cpuset`), so that `nproc`, Python's
//! `os.sched_getaffinity` and every thread pool sized from the scheduler's affinity mask see
//! the desktop's vcpus, as they would in a VM of that size, not the host's count. The CPU quota
//! still says how much time a desktop gets; this says on which CPUs.

use std::collections::HashMap;

/// The CPUs in a kernel CPU list (`cpuset.cpus`, `/sys/devices/system/cpu/online`): `"0-3,8,10-11"`
/// → `[0, 1, 2, 3, 8, 10, 11]`. Malformed parts are skipped: the list comes from the kernel.
pub fn parse_list(text: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let range = match part.split_once('-') {
            Some((first, last)) => first.parse::<u32>().ok().zip(last.parse().ok()),
            None => part.parse().ok().map(|one| (one, one)),
        };
        if let Some((first, last)) = range {
            cpus.extend(first..=last);
        }
    }
    cpus
}

/// Where a desktop's CPUs are to go: what it has now and what the others have.
#[derive(Debug, Default)]
pub struct Placement {
    /// The desktop's own CPUs now (none at its start): kept as far as its new count allows.
    pub current: Vec<u32>,
    /// How many other desktops have each CPU: the least taken are given first.
    pub taken: HashMap<u32, usize>,
}

/// The `cpuset.cpus` value (`"1"`, `"0,1"`) for desktop `id` of `vcpus` among `available`:
/// ceil(`vcpus`) CPUs, at least one and at most all; its current ones first, then the least
/// taken, ties broken by a place the desktop's id gives (so that gateways that know nothing of
/// each other still spread desktops out, and one desktop's choice is the same every time).
/// `None` when nothing is available.
pub fn pick(id: &str, vcpus: f64, available: &[u32], placement: &Placement) -> Option<String> {
    if available.is_empty() {
        return None;
    }
    let wanted = (vcpus.ceil() as usize).clamp(1, available.len());
    let start = id
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
    let mut order: Vec<(usize, u32)> = (0..available.len())
        .map(|i| (i, available[start.wrapping_add(i) % available.len()]))
        .collect();
    order.sort_by_key(|&(i, cpu)| {
        let taken = placement.taken.get(&cpu).copied().unwrap_or(0);
        (!placement.current.contains(&cpu), taken, i)
    });
    let mut chosen: Vec<u32> = order.into_iter().take(wanted).map(|(_, cpu)| cpu).collect();
    chosen.sort_unstable();
    Some(chosen.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lists_parse() {
        assert_eq!(parse_list("0-3,8,10-11\n"), [0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_list("5"), [5]);
        assert!(parse_list("\n").is_empty());
        assert_eq!(parse_list("x,2"), [2]);
    }

    fn fresh() -> Placement {
        Placement::default()
    }

    #[test]
    fn a_desktop_gets_its_vcpus_rounded_up_within_the_machine() {
        let machine = [0, 1, 2, 3];
        let count = |list: String| list.split(',').count();
        assert_eq!(pick("a", 0.5, &machine, &fresh()).map(count), Some(1));
        assert_eq!(pick("a", 2.0, &machine, &fresh()).map(count), Some(2));
        assert_eq!(pick("a", 64.0, &machine, &fresh()).as_deref(), Some("0,1,2,3"));
        assert_eq!(pick("a", 1.0, &[], &fresh()), None);
        // Only CPUs that are there, each once.
        let odd = [1, 3, 5];
        for id in ["a", "b", "c", "desktop-7"] {
            let list = parse_list(&pick(id, 2.0, &odd, &fresh()).unwrap());
            assert_eq!(list.len(), 2);
            assert!(list.iter().all(|c| odd.contains(c)) && list[0] != list[1]);
        }
    }

    #[test]
    fn the_least_taken_cpus_go_first_and_a_resize_keeps_what_it_can() {
        let machine = [0, 1, 2, 3];
        let taken = HashMap::from([(0, 2), (1, 1), (3, 1)]);
        let placed = Placement {
            current: vec![],
            taken,
        };
        assert_eq!(pick("a", 1.0, &machine, &placed).as_deref(), Some("2"));
        let grown = Placement {
            current: vec![3],
            ..placed
        };
        let list = parse_list(&pick("a", 3.0, &machine, &grown).unwrap());
        assert!(
            list.contains(&3) && list.contains(&2) && !list.contains(&0),
            "{list:?}"
        );
        let shrunk = Placement {
            current: vec![1, 2],
            taken: HashMap::new(),
        };
        let one = parse_list(&pick("a", 1.0, &machine, &shrunk).unwrap());
        assert!(one == [1] || one == [2], "{one:?}");
    }

    #[test]
    fn without_a_record_desktops_spread_by_their_ids() {
        let machine = [0, 1];
        let firsts: std::collections::HashSet<_> = (0..20)
            .map(|i| pick(&format!("desktop-{i}"), 1.0, &machine, &fresh()).unwrap())
            .collect();
        assert_eq!(firsts.len(), 2, "{firsts:?}");
    }
}
