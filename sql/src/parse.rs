//! Statement text → AST, with a guard against statements too deep to process.
//!
//! sqlparser builds a left-deep chain for `1 + 1 + … + 1` without recursing, but dropping,
//! printing, binding and evaluating such a chain all recurse once per operator: a client could
//! crash the server with a long enough sum. Before parsing, the token stream is scanned (a
//! linear, non-recursive pass) for the longest chain of operators one expression can contain;
//! a statement past [`MAX_EXPRESSION_DEPTH`] is refused with SQLSTATE 54001, as PostgreSQL
//! refuses statements that exceed its stack depth. Commas end a chain (list items are
//! separate subtrees), parentheses nest one (an inner chain adds to the enclosing one).
//!
//! Statements about regions ([`crate::region_syntax`]) are recognised before sqlparser: the
//! tokens are cut into statements at top-level semicolons, each is offered to the recogniser,
//! and the runs of statements it does not claim go to sqlparser as they are. A string without
//! region statements goes to sqlparser whole, exactly as before.

use std::ops::Range;

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::MAX_EXPRESSION_DEPTH;
use crate::region_syntax::{self, RegionStatement};

/// One statement of a query string.
#[derive(Clone, Debug, PartialEq)]
pub enum ParsedStatement {
    /// Boxed: sqlparser's statements are large, region statements small.
    Sql(Box<Statement>),
    Regions(RegionStatement),
}

impl std::fmt::Display for ParsedStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParsedStatement::Sql(statement) => statement.fmt(f),
            ParsedStatement::Regions(statement) => statement.fmt(f),
        }
    }
}

/// Whether a token can join two expressions into a deeper one. Conservative: every token
/// except literals, plain words, punctuation that separates or groups, and whitespace counts
/// (sqlparser knows dozens of operators, and any of them can be chained).
fn is_operator(token: &Token) -> bool {
    match token {
        Token::Word(word) => matches!(
            word.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::BETWEEN
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::IN
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::XOR
                | Keyword::OVERLAPS
                | Keyword::ESCAPE
        ),
        Token::EOF
        | Token::Number(..)
        | Token::Char(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::Comma
        | Token::Whitespace(_)
        | Token::LParen
        | Token::RParen
        | Token::LBracket
        | Token::RBracket
        | Token::Period
        | Token::SemiColon
        | Token::Placeholder(_) => false,
        _ => true,
    }
}

/// An upper bound on the depth of any expression the tokens can form.
///
/// Per parenthesis level it keeps the operators since the last comma (`current`) and the most
/// any comma-separated item of the group had (`widest`). A closed group sits under the
/// operators that follow it, so its `widest` is added to the enclosing level's `current`.
fn max_chain(tokens: &[TokenWithSpan]) -> usize {
    #[derive(Default)]
    struct Level {
        current: usize,
        widest: usize,
    }
    let mut levels: Vec<Level> = vec![Level::default()];
    // Sum of `current` over all open levels: the depth at this point.
    let mut total = 0usize;
    let mut deepest = 0usize;
    for token in tokens {
        match &token.token {
            Token::LParen | Token::LBracket => levels.push(Level::default()),
            Token::RParen | Token::RBracket if levels.len() > 1 => {
                let closed = levels.pop().unwrap_or_default();
                total = total - closed.current + closed.widest;
                if let Some(parent) = levels.last_mut() {
                    parent.current += closed.widest;
                    parent.widest = parent.widest.max(parent.current);
                }
            }
            Token::Comma | Token::SemiColon => {
                if let Some(level) = levels.last_mut() {
                    total -= level.current;
                    level.current = 0;
                }
            }
            t if is_operator(t) => {
                if let Some(level) = levels.last_mut() {
                    level.current += 1;
                    level.widest = level.widest.max(level.current);
                    total += 1;
                }
            }
            _ => {}
        }
        deepest = deepest.max(total);
    }
    deepest
}

pub fn syntax_error(e: ParserError) -> SqlError {
    match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => {
            SqlError::new(sqlstate::SYNTAX_ERROR, format!("syntax error: {m}"))
        }
        ParserError::RecursionLimitExceeded => SqlError::new(
            sqlstate::STATEMENT_TOO_COMPLEX,
            "statement is too deeply nested",
        ),
    }
}

/// Parses a query string (possibly several statements) with PostgreSQL's dialect.
pub fn parse(sql: &str) -> SqlResult<Vec<ParsedStatement>> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::new(sqlstate::SYNTAX_ERROR, format!("syntax error: {e}")))?;
    if max_chain(&tokens) > MAX_EXPRESSION_DEPTH {
        return Err(SqlError::new(
            sqlstate::STATEMENT_TOO_COMPLEX,
            format!("expression is too deeply nested (more than {MAX_EXPRESSION_DEPTH} levels)"),
        ));
    }
    let statements = statement_ranges(&tokens);
    let recognized: Vec<_> = statements
        .iter()
        .map(|range| region_syntax::recognize(&tokens[range.clone()]))
        .collect();
    if recognized.iter().all(Option::is_none) {
        return Ok(parse_sql(tokens)?
            .into_iter()
            .map(|statement| ParsedStatement::Sql(Box::new(statement)))
            .collect());
    }
    let mut parsed = Vec::new();
    // The start of the tokens not yet parsed: a run of statements for sqlparser.
    let mut run_start = 0;
    for (range, region_statement) in statements.into_iter().zip(recognized) {
        let Some(region_statement) = region_statement else {
            continue;
        };
        let run = tokens[run_start.min(range.start)..range.start].to_vec();
        parsed.extend(
            parse_sql(run)?
                .into_iter()
                .map(|statement| ParsedStatement::Sql(Box::new(statement))),
        );
        parsed.push(ParsedStatement::Regions(region_statement?));
        // Past the statement's semicolon, if it has one.
        run_start = range.end + 1;
    }
    let rest = tokens[run_start.min(tokens.len())..].to_vec();
    parsed.extend(
        parse_sql(rest)?
            .into_iter()
            .map(|statement| ParsedStatement::Sql(Box::new(statement))),
    );
    Ok(parsed)
}

fn parse_sql(tokens: Vec<TokenWithSpan>) -> SqlResult<Vec<Statement>> {
    Parser::new(&PostgreSqlDialect {})
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(syntax_error)
}

/// The token ranges of the statements, cut at semicolons (a semicolon inside a string or a
/// comment is part of that token). Each range excludes its semicolon; empty statements are
/// left out.
fn statement_ranges(tokens: &[TokenWithSpan]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    for (i, token) in tokens.iter().enumerate() {
        if token.token == Token::SemiColon {
            ranges.push(start..i);
            start = i + 1;
        }
    }
    ranges.push(start..tokens.len());
    ranges.retain(|range| {
        tokens[range.clone()]
            .iter()
            .any(|t| !matches!(t.token, Token::Whitespace(_)))
    });
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(sql: &str) -> usize {
        max_chain(
            &Tokenizer::new(&PostgreSqlDialect {}, sql)
                .tokenize_with_location()
                .unwrap(),
        )
    }

    #[test]
    fn chains_are_measured_per_expression() {
        assert_eq!(chain("SELECT 1 + 2 * 3"), 2);
        assert_eq!(chain("INSERT INTO t VALUES (-1, -2), (-3, -4)"), 1);
        assert_eq!(chain("SELECT a IN (1, 2, 3) AND b = 1"), 3);
        assert_eq!(chain("SELECT 1 + (2 + (3 + 4)) + 5"), 4);
        assert_eq!(chain("SELECT 1 + 1; SELECT 2 + 2 + 2"), 2);
        // An earlier item of a closed group still counts under what follows the group.
        assert_eq!(chain("SELECT (1 + 1 + 1, 2) + 3 + 3"), 4);
        assert_eq!(chain("SELECT f(1 + 1, 2 + 2 + 2), 5 + 5"), 2);
        // Any operator counts, not only arithmetic and comparison.
        assert_eq!(chain("SELECT 1 & 1 | 1 # 1 << 1"), 4);
        assert_eq!(chain("SELECT a LIKE 'x' AND b IN (1)"), 3);
    }

    /// Each statement as text, region statements in brackets.
    fn statements(sql: &str) -> Vec<String> {
        parse(sql)
            .unwrap()
            .iter()
            .map(|statement| match statement {
                ParsedStatement::Sql(sql) => sql.to_string(),
                ParsedStatement::Regions(regions) => format!("[{regions}]"),
            })
            .collect()
    }

    #[test]
    fn region_statements_are_cut_out_of_query_strings() {
        assert_eq!(statements("SHOW REGIONS;"), ["[SHOW REGIONS]"]);
        assert_eq!(
            statements("SELECT 1; show regions from table t; SELECT 2; SELECT 3;"),
            [
                "SELECT 1",
                "[SHOW REGIONS FROM TABLE t]",
                "SELECT 2",
                "SELECT 3"
            ]
        );
        // Semicolons inside strings and comments do not cut.
        assert_eq!(
            statements("SELECT ';' /* ; */; ; ALTER TABLE t SPLIT AT VALUES (1), ('a;b');;"),
            ["SELECT ';'", "[ALTER TABLE t SPLIT AT VALUES (1), ('a;b')]"]
        );
        assert_eq!(statements("SELECT 1; SELECT 2"), ["SELECT 1", "SELECT 2"]);
    }

    #[test]
    fn a_syntax_error_anywhere_fails_the_whole_string() {
        for sql in [
            "SHOW REGIONS; SELEC 1",
            "SELEC 1; SHOW REGIONS",
            "SELECT 1; SHOW REGIONS FROM t",
        ] {
            assert_eq!(
                parse(sql).unwrap_err().code,
                sqlstate::SYNTAX_ERROR,
                "{sql}"
            );
        }
        let deep = format!("SHOW REGIONS; SELECT {}", vec!["1"; 2000].join(" + "));
        assert_eq!(
            parse(&deep).unwrap_err().code,
            sqlstate::STATEMENT_TOO_COMPLEX
        );
    }
}
