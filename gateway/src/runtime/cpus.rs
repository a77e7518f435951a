//! Which of the machine's CPUs a desktop may run on (its `cpuset`), so that `nproc`, Python's
//! `os.sched_getaffinity` and every thread pool sized from the scheduler's affinity mask see
//! the desktop's vcpus, as they would in a VM of that size, not the host's count. The CPU quota
//! still says how much time a desktop gets; this says on which CPUs.

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

/// The `cpuset.cpus` value (`"1"`, `"0,1"`) for desktop `id` of `vcpus` among `available`:
/// ceil(`vcpus`) CPUs, at least one and at most all. Where the run of them starts comes from
/// the desktop's id, so desktops spread over the machine without any record shared between
/// gateways, and a desktop keeps its CPUs across a resize as far as its new count allows.
/// `None` when nothing is available.
pub fn pick(id: &str, vcpus: f64, available: &[u32]) -> Option<String> {
    if available.is_empty() {
        return None;
    }
    let wanted = (vcpus.ceil() as usize).clamp(1, available.len());
    let start = id
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)))
        % available.len();
    let mut chosen: Vec<u32> = (0..wanted)
        .map(|i| available[(start + i) % available.len()])
        .collect();
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

    #[test]
    fn a_desktop_gets_its_vcpus_rounded_up_within_the_machine() {
        let machine = [0, 1, 2, 3];
        let count = |list: String| list.split(',').count();
        assert_eq!(pick("a", 0.5, &machine).map(count), Some(1));
        assert_eq!(pick("a", 2.0, &machine).map(count), Some(2));
        assert_eq!(pick("a", 64.0, &machine).as_deref(), Some("0,1,2,3"));
        assert_eq!(pick("a", 1.0, &[]), None);
        // Only CPUs that are there, each once.
        let odd = [1, 3, 5];
        for id in ["a", "b", "c", "desktop-7"] {
            let list = parse_list(&pick(id, 2.0, &odd).unwrap());
            assert_eq!(list.len(), 2);
            assert!(list.iter().all(|c| odd.contains(c)) && list[0] != list[1]);
        }
    }

    #[test]
    fn desktops_spread_over_the_machine() {
        let machine = [0, 1];
        let firsts: std::collections::HashSet<_> = (0..20)
            .map(|i| pick(&format!("desktop-{i}"), 1.0, &machine).unwrap())
            .collect();
        assert_eq!(firsts.len(), 2, "{firsts:?}");
    }
}
