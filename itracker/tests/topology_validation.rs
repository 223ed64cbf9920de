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
