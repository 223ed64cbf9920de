//! Topology files are validated with errors that name the PID, prefix, link or field.

use p4p_itracker::model::{Topology, TopologyError};

fn err(text: &str) -> String {
    Topology::from_toml_str(text)
        .expect_err("must be rejected")
        .to_string()
}

const HEAD: &str = "isp = \"t\"\n";

fn pid(name: &str, kind: &str, prefixes: &str) -> String {
    format!("[[pid]]\nname = \"{name}\"\nkind = \"{kind}\"\nprefixes = [{prefixes}]\n")
}

#[test]
fn pid_names_follow_rfc_7285() {
    let e = err(&format!("{HEAD}{}", pid("new york", "internal", "")));
    assert!(e.contains("new york") && e.contains("' '"), "{e}");
    let long = "x".repeat(65);
    assert!(err(&format!("{HEAD}{}", pid(&long, "internal", ""))).contains("65 characters"));
    assert!(err(&format!(
        "{HEAD}{}{}",
        pid("a", "internal", ""),
        pid("a", "external", "")
    ))
    .contains("PID a is defined twice"));
}

#[test]
fn prefixes_are_checked_and_never_in_two_pids() {
    let e = err(&format!(
        "{HEAD}{}",
        pid("a", "internal", "\"10.0.0.0/33\"")
    ));
    assert!(e.contains("PID a") && e.contains("10.0.0.0/33"), "{e}");
    let e = err(&format!(
        "{HEAD}{}",
        pid("a", "internal", "\"10.1.2.3/16\"")
    ));
    assert!(e.contains("host bits") && e.contains("10.1.0.0/16"), "{e}");
    let e = err(&format!("{HEAD}{}", pid("a", "internal", "\"10.1.2.3\"")));
    assert!(e.contains("no /length"), "{e}");
    let e = err(&format!(
        "{HEAD}{}{}",
        pid("a", "internal", "\"10.0.0.0/8\""),
        pid("b", "internal", "\"2001:db8::/32\", \"10.0.0.0/8\"")
    ));
    assert_eq!(e, "prefix 10.0.0.0/8 is in PID a and in PID b");
}

fn link(fields: &str) -> String {
    format!(
        "{HEAD}{}{}{}[[link]]\n{fields}\n",
        pid("a", "internal", ""),
        pid("b", "internal", ""),
        pid("x", "external", "")
    )
}

#[test]
fn links_name_existing_pids_with_positive_weights_and_capacities() {
    let e = err(&link("from = \"a\"\nto = \"zz\"\ncapacity = 1\nweight = 1"));
    assert_eq!(e, "link a->zz: field to names unknown PID \"zz\"");
    let e = err(&link(
        "name = \"l1\"\nfrom = \"a\"\nto = \"b\"\ncapacity = 0\nweight = 1",
    ));
    assert!(e.contains("link l1") && e.contains("capacity"), "{e}");
    let e = err(&link("from = \"a\"\nto = \"b\"\ncapacity = 1\nweight = -3"));
    assert!(e.contains("weight = -3"), "{e}");
    let e = err(&link("from = \"a\"\nto = \"b\"\ncapacity = 1"));
    assert!(e.contains("weight") && e.contains("IGP"), "{e}");
    let e = err(&link("from = \"a\"\nto = \"x\"\ncapacity = 1\nweight = 5"));
    assert!(e.contains("egress"), "{e}");
    let e = err(&link("from = \"x\"\nto = \"a\"\ncapacity = 1"));
    assert!(e.contains("field from"), "{e}");
    let e = err(&link(
        "from = \"a\"\nto = \"b\"\ncapacity = 1\nweight = 1\ncost = -1",
    ));
    assert!(e.contains("cost"), "{e}");
}

#[test]
fn unknown_fields_and_bad_settings_are_errors() {
    assert!(matches!(
        Topology::from_toml_str("isp = \"t\"\ncolour = 1\n"),
        Err(TopologyError::Syntax(_))
    ));
    assert!(err("isp = \"t\"\n[defaults]\nintra_pid = -1\n").contains("defaults.intra_pid"));
    assert!(err("isp = \"t\"\n[pricing]\nmlu_target = 2\n").contains("pricing.mlu_target"));
}

#[test]
fn the_map_is_completed_by_a_default_pid() {
    let t = Topology::from_toml_str(&format!("{HEAD}{}", pid("a", "internal", "\"10.0.0.0/8\"")))
        .expect("valid");
    let d = t.pid_index("default").expect("default PID");
    let prefixes: Vec<String> = t.pids()[d].prefixes.iter().map(|p| p.to_string()).collect();
    assert_eq!(prefixes, ["0.0.0.0/0", "::/0"]);
}

#[test]
fn interdomain_can_include_the_intradomain_part() {
    let text = |include: bool| {
        format!(
            "{HEAD}[defaults]\ninterdomain_includes_intradomain = {include}\n{}{}{}\
         [[link]]\nfrom = \"a\"\nto = \"b\"\ncapacity = 1\nweight = 1\ncost = 3\n\
         [[link]]\nfrom = \"b\"\nto = \"x\"\ncapacity = 1\ncost = 7\n",
            pid("a", "internal", ""),
            pid("b", "internal", ""),
            pid("x", "external", "")
        )
    };
    for (include, expected) in [(false, 7.0), (true, 10.0)] {
        let t = Topology::from_toml_str(&text(include)).expect("valid");
        let (a, x) = (t.pid_index("a").expect("a"), t.pid_index("x").expect("x"));
        let costs = t.costs();
        assert_eq!(costs.get(a, x), expected, "include = {include}");
        assert_eq!(
            costs.get(x, a),
            65.0,
            "external to anything: interdomain default"
        );
    }
}

/// Issue 16 item 5: two link costs of 1e308 are each valid, but their sum along a path is inf;
/// a cost of 1e39 is a finite f64 but an infinite f32. Both are refused with the PIDs named,
/// never a panic later (snapshot, cost map).
#[test]
fn costs_that_overflow_along_a_path_or_as_f32_are_refused() {
    let chain = |cost: &str| {
        format!(
            "{HEAD}{}{}{}\
             [[link]]\nfrom = \"a\"\nto = \"b\"\ncapacity = 1\nweight = 1\ncost = {cost}\n\
             [[link]]\nfrom = \"b\"\nto = \"c\"\ncapacity = 1\nweight = 1\ncost = {cost}\n",
            pid("a", "internal", "\"10.1.0.0/16\""),
            pid("b", "internal", "\"10.2.0.0/16\""),
            pid("c", "internal", "\"10.3.0.0/16\"")
        )
    };
    // 1e308 per link: refused at the link (it would sum to inf along a -> b -> c).
    let e = err(&chain("1e308"));
    assert!(
        e.contains("link a->b") && e.contains("at most 3.4e38"),
        "{e}"
    );
    // 1e38 per link: each fits f32, the sum (2e38) too; 2e38 + 2e38 would not.
    Topology::from_toml_str(&chain("1e38"))
        .expect("finite as f32")
        .snapshot();
    let e = err(&chain("1e39"));
    assert!(e.contains("link a->b") && e.contains("cost"), "{e}");
    let e = err(&chain("2e38"));
    assert!(e.contains("p-distance from PID a to PID c"), "{e}");
    for field in ["interdomain", "same_asn", "link"] {
        let e = err(&format!("{HEAD}[defaults]\n{field} = 1e39\n"));
        assert!(e.contains(&format!("defaults.{field}")), "{e}");
    }
    let e = err(&format!("{HEAD}[pricing]\nmax_price = 1e39\n"));
    assert!(e.contains("pricing.max_price"), "{e}");
}

/// Issue 16 item 8: an IPv4-mapped IPv6 prefix is the IPv4 prefix it denotes, so the network
/// map publishes it where lookups of mapped addresses find it, and a clash with the IPv4
/// spelling is a duplicate.
#[test]
fn ipv4_mapped_prefixes_are_normalised_to_ipv4() {
    let t = Topology::from_toml_str(&format!(
        "{HEAD}{}",
        pid("a", "internal", "\"::ffff:10.0.0.0/104\"")
    ))
    .expect("valid");
    let a = t.pid_index("a").expect("a");
    let prefixes: Vec<String> = t.pids()[a].prefixes.iter().map(|p| p.to_string()).collect();
    assert_eq!(prefixes, ["10.0.0.0/8"]);
    let s = t.snapshot();
    for ip in ["10.1.2.3", "::ffff:10.1.2.3"] {
        let idx = s.locate(ip.parse().expect("ip"));
        assert_eq!(&*s.pid(idx).name, "a", "{ip}");
    }
    let e = err(&format!(
        "{HEAD}{}{}",
        pid("a", "internal", "\"10.0.0.0/8\""),
        pid("b", "internal", "\"::ffff:10.0.0.0/104\"")
    ));
    assert!(e.contains("10.0.0.0/8") && e.contains("PID a"), "{e}");
}
