//! Hostile statements get errors, never a crashed server.

use sql::Database;

fn first_error(sql: &str) -> Option<&'static str> {
    let db = Database::in_memory();
    let mut session = db.session();
    session
        .execute(sql)
        .into_iter()
        .find_map(|r| r.err())
        .map(|e| e.code)
}

#[test]
fn deeply_nested_expressions_are_refused() {
    let terms = 20_000;
    let long_sum = format!("SELECT {}", vec!["1"; terms].join(" + "));
    assert_eq!(first_error(&long_sum), Some("54001"));
    let parens = format!("SELECT {}1{}", "(".repeat(terms), ")".repeat(terms));
    assert!(first_error(&parens).is_some());
    for operator in [" & ", " | ", " # ", " << ", " ~ ", " ^ "] {
        let chain = format!("SELECT {}", vec!["1"; terms].join(operator));
        assert_eq!(first_error(&chain), Some("54001"), "{operator}");
    }
    let ands = format!("SELECT 1 WHERE {}", vec!["true"; terms].join(" AND "));
    assert_eq!(first_error(&ands), Some("54001"));
}

#[test]
fn long_in_lists_work() {
    let db = Database::in_memory();
    let mut session = db.session();
    let list: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    let sql = format!("SELECT 1 WHERE 19999 IN ({})", list.join(", "));
    let results = session.execute(&sql);
    assert!(matches!(results.last(), Some(Ok(_))), "{results:?}");
}

#[test]
fn expressions_up_to_the_limit_work_on_a_small_stack() {
    // Sessions run on threads with the default 2 MiB stack; the deepest accepted expression
    // must bind, evaluate and drop there (in debug builds, the largest frames).
    let worker = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let db = Database::in_memory();
            let mut session = db.session();
            let sum = format!("SELECT {}", vec!["1"; 1000].join(" + "));
            match session.execute(&sum).pop() {
                Some(Ok(sql::StatementResult::Rows { rows, .. })) => rows[0][0].clone(),
                other => panic!("{other:?}"),
            }
        })
        .unwrap();
    assert_eq!(worker.join().unwrap().as_deref(), Some("1000"));
}

#[test]
fn nested_in_and_between_bind_their_operand_once() {
    // Binding the operand once per list item would double the work at every level.
    let mut condition = "true".to_string();
    for _ in 0..24 {
        condition = format!("({condition}) IN (true, false)");
    }
    let db = Database::in_memory();
    let mut session = db.session();
    let result = session
        .execute(&format!("SELECT 1 WHERE {condition}"))
        .pop();
    assert!(matches!(result, Some(Ok(_))), "{result:?}");
    let mut between = "1".to_string();
    for _ in 0..15 {
        between = format!("(({between}) BETWEEN 0 AND 1)::int");
    }
    let result = session.execute(&format!("SELECT {between}")).pop();
    assert!(matches!(result, Some(Ok(_))), "{result:?}");
}
