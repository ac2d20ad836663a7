//! The statements about regions, which sqlparser does not know, recognised from the tokens of
//! one statement before sqlparser sees them:
//!
//! ```text
//! SHOW REGIONS
//! SHOW REGIONS FROM TABLE name
//! ALTER TABLE name SPLIT AT VALUES (expr, …) [, (expr, …)]…
//! ALTER TABLE name UNSPLIT AT VALUES (expr, …) [, (expr, …)]…
//! ALTER TABLE name UNSPLIT ALL
//! ```
//!
//! Keywords are case-insensitive and may be separated by any whitespace or comments; the
//! statement ends at its `;` or the end of the string ([`crate::parse`] cuts a query string
//! into statements at top-level semicolons). A statement is claimed by its leading words —
//! `SHOW REGIONS`, or `ALTER TABLE name SPLIT`/`UNSPLIT` — and must then be exactly one of
//! these forms:
//! anything else (`SHOW REGIONS FROM t`, a missing `)`) is a syntax error (42601) rather than
//! something for sqlparser to misread. Every other statement is left to sqlparser. The split
//! values are parsed as sqlparser expressions, to be bound like INSERT's values.

use sqlparser::ast;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{SqlError, SqlResult, sqlstate};
use crate::parse::syntax_error;

/// A statement about regions.
#[derive(Clone, Debug, PartialEq)]
pub enum RegionStatement {
    /// `SHOW REGIONS [FROM TABLE table]`.
    ShowRegions { table: Option<ast::ObjectName> },
    /// `ALTER TABLE table SPLIT AT VALUES …`: one list of primary-key values per split point.
    SplitAt {
        table: ast::ObjectName,
        rows: Vec<Vec<ast::Expr>>,
    },
    /// `ALTER TABLE table UNSPLIT AT VALUES …` (`rows`) or `… UNSPLIT ALL` (`None`).
    Unsplit {
        table: ast::ObjectName,
        rows: Option<Vec<Vec<ast::Expr>>>,
    },
}

impl std::fmt::Display for RegionStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegionStatement::ShowRegions { table: None } => f.write_str("SHOW REGIONS"),
            RegionStatement::ShowRegions { table: Some(table) } => {
                write!(f, "SHOW REGIONS FROM TABLE {table}")
            }
            RegionStatement::SplitAt { table, rows } => {
                write!(f, "ALTER TABLE {table} SPLIT AT VALUES ")?;
                write_rows(f, rows)
            }
            RegionStatement::Unsplit { table, rows: None } => {
                write!(f, "ALTER TABLE {table} UNSPLIT ALL")
            }
            RegionStatement::Unsplit {
                table,
                rows: Some(rows),
            } => {
                write!(f, "ALTER TABLE {table} UNSPLIT AT VALUES ")?;
                write_rows(f, rows)
            }
        }
    }
}

fn write_rows(f: &mut std::fmt::Formatter<'_>, rows: &[Vec<ast::Expr>]) -> std::fmt::Result {
    for (i, row) in rows.iter().enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        let values: Vec<String> = row.iter().map(ast::Expr::to_string).collect();
        write!(f, "{separator}({})", values.join(", "))?;
    }
    Ok(())
}

/// The region statement `statement` (the tokens of one statement, without its `;`) is, if its
/// leading words claim it; `None` leaves it to sqlparser.
pub fn recognize(statement: &[TokenWithSpan]) -> Option<SqlResult<RegionStatement>> {
    let mut words = statement
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)));
    let (first, second) = (words.next()?, words.next()?);
    let show = is_word(first, "SHOW") && is_word(second, "REGIONS");
    let alter_table = is_word(first, "ALTER") && is_word(second, "TABLE");
    if !(show || alter_table) {
        return None;
    }
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(statement.to_vec());
    // Past the two words just matched.
    parser.next_token();
    parser.next_token();
    if show {
        Some(show_regions(&mut parser))
    } else {
        let table = parser.parse_object_name(false).ok()?;
        if take_word(&mut parser, "UNSPLIT") {
            return Some(unsplit(&mut parser, table));
        }
        if !take_word(&mut parser, "SPLIT") {
            return None;
        }
        Some(split_at(&mut parser, table))
    }
}

fn show_regions(parser: &mut Parser) -> SqlResult<RegionStatement> {
    const FORM: &str = "SHOW REGIONS [FROM TABLE name]";
    if at_end(parser) {
        return Ok(RegionStatement::ShowRegions { table: None });
    }
    expect_word(parser, "FROM", FORM)?;
    expect_word(parser, "TABLE", FORM)?;
    if !matches!(parser.peek_token_ref().token, Token::Word(_)) {
        return Err(unexpected(parser, FORM));
    }
    let table = parser.parse_object_name(false).map_err(syntax_error)?;
    expect_end(parser, FORM)?;
    Ok(RegionStatement::ShowRegions { table: Some(table) })
}

fn split_at(parser: &mut Parser, table: ast::ObjectName) -> SqlResult<RegionStatement> {
    const FORM: &str = "ALTER TABLE name SPLIT AT VALUES (value, …) [, …]";
    let rows = values_rows(parser, FORM)?;
    Ok(RegionStatement::SplitAt { table, rows })
}

fn unsplit(parser: &mut Parser, table: ast::ObjectName) -> SqlResult<RegionStatement> {
    const FORM: &str = "ALTER TABLE name UNSPLIT { AT VALUES (value, …) [, …] | ALL }";
    if take_word(parser, "ALL") {
        expect_end(parser, FORM)?;
        return Ok(RegionStatement::Unsplit { table, rows: None });
    }
    let rows = values_rows(parser, FORM)?;
    Ok(RegionStatement::Unsplit {
        table,
        rows: Some(rows),
    })
}

/// `AT VALUES (value, …) [, …]` to the end of the statement.
fn values_rows(parser: &mut Parser, form: &str) -> SqlResult<Vec<Vec<ast::Expr>>> {
    expect_word(parser, "AT", form)?;
    expect_word(parser, "VALUES", form)?;
    let rows = parser
        .parse_comma_separated(|p| {
            p.expect_token(&Token::LParen)?;
            let values = p.parse_comma_separated(Parser::parse_expr)?;
            p.expect_token(&Token::RParen)?;
            Ok(values)
        })
        .map_err(syntax_error)?;
    expect_end(parser, form)?;
    Ok(rows)
}

/// An unquoted word, in any case.
fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Consumes the next token if it is `word`.
fn take_word(parser: &mut Parser, word: &str) -> bool {
    let matched = is_word(&parser.peek_token_ref().token, word);
    if matched {
        parser.next_token();
    }
    matched
}

fn at_end(parser: &Parser) -> bool {
    matches!(parser.peek_token_ref().token, Token::EOF)
}

/// PostgreSQL's wording: "syntax error at or near …" / "at end of input".
fn unexpected(parser: &Parser, form: &str) -> SqlError {
    let near = match &parser.peek_token_ref().token {
        Token::EOF => "at end of input".to_string(),
        token => format!("at or near \"{token}\""),
    };
    SqlError::new(
        sqlstate::SYNTAX_ERROR,
        format!("syntax error {near} (expected {form})"),
    )
}

fn expect_word(parser: &mut Parser, word: &str, form: &str) -> SqlResult<()> {
    if take_word(parser, word) {
        Ok(())
    } else {
        Err(unexpected(parser, form))
    }
}

fn expect_end(parser: &Parser, form: &str) -> SqlResult<()> {
    if at_end(parser) {
        Ok(())
    } else {
        Err(unexpected(parser, form))
    }
}

#[cfg(test)]
mod tests {
    use sqlparser::tokenizer::Tokenizer;

    use super::*;

    fn recognized(sql: &str) -> Option<SqlResult<RegionStatement>> {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        recognize(&tokens)
    }

    fn show(table: Option<&str>) -> RegionStatement {
        RegionStatement::ShowRegions {
            table: table.map(|t| ast::ObjectName::from(vec![ast::Ident::new(t)])),
        }
    }

    #[test]
    fn show_regions_in_any_case_and_spacing() {
        for sql in [
            "SHOW REGIONS",
            "show regions",
            "  Show\n\tRegions  ",
            "SHOW /* all of them */ REGIONS -- please",
        ] {
            assert_eq!(recognized(sql), Some(Ok(show(None))), "{sql}");
        }
        let from = recognized("show regions from table accounts")
            .unwrap()
            .unwrap();
        assert_eq!(from, show(Some("accounts")));
        let RegionStatement::ShowRegions { table: Some(name) } =
            recognized("SHOW REGIONS FROM TABLE public.\"Accounts\"")
                .unwrap()
                .unwrap()
        else {
            panic!("not SHOW REGIONS FROM TABLE");
        };
        assert_eq!(name.to_string(), "public.\"Accounts\"");
    }

    #[test]
    fn malformed_show_regions_is_a_syntax_error() {
        for sql in [
            "SHOW REGIONS FROM accounts",
            "SHOW REGIONS FROM TABLE",
            "SHOW REGIONS FROM TABLE a b",
            "SHOW REGIONS 1",
        ] {
            let error = recognized(sql).unwrap().unwrap_err();
            assert_eq!(error.code, sqlstate::SYNTAX_ERROR, "{sql}: {error}");
        }
        let error = recognized("SHOW REGIONS FROM TABLE").unwrap().unwrap_err();
        assert!(error.message.contains("at end of input"), "{error}");
    }

    #[test]
    fn split_at_takes_rows_of_expressions() {
        let Some(Ok(RegionStatement::SplitAt { table, rows })) =
            recognized("alter table t split at values (500), (-1 + 2, 'x')")
        else {
            panic!("not SPLIT AT");
        };
        assert_eq!(table.to_string(), "t");
        let shown: Vec<Vec<String>> = rows
            .iter()
            .map(|row| row.iter().map(|e| e.to_string()).collect())
            .collect();
        assert_eq!(shown, [vec!["500"], vec!["-1 + 2", "'x'"]]);
    }

    #[test]
    fn malformed_split_at_is_a_syntax_error() {
        for sql in [
            "ALTER TABLE t SPLIT",
            "ALTER TABLE t SPLIT AT (1)",
            "ALTER TABLE t SPLIT AT VALUES",
            "ALTER TABLE t SPLIT AT VALUES (1",
            "ALTER TABLE t SPLIT AT VALUES ()",
            "ALTER TABLE t SPLIT AT VALUES (1) (2)",
            "ALTER TABLE t SPLIT AT VALUES (1) ORDER BY 1",
        ] {
            let error = recognized(sql).unwrap().unwrap_err();
            assert_eq!(error.code, sqlstate::SYNTAX_ERROR, "{sql}: {error}");
        }
    }

    #[test]
    fn unsplit_takes_rows_or_all() {
        let Some(Ok(RegionStatement::Unsplit { table, rows: None })) =
            recognized("alter table t unsplit all")
        else {
            panic!("not UNSPLIT ALL");
        };
        assert_eq!(table.to_string(), "t");
        let Some(Ok(statement)) = recognized("ALTER TABLE t UNSPLIT AT VALUES (5), (7)") else {
            panic!("not UNSPLIT AT");
        };
        assert_eq!(
            statement.to_string(),
            "ALTER TABLE t UNSPLIT AT VALUES (5), (7)"
        );
        for sql in [
            "ALTER TABLE t UNSPLIT",
            "ALTER TABLE t UNSPLIT ALL 1",
            "ALTER TABLE t UNSPLIT AT (1)",
            "ALTER TABLE t UNSPLIT AT VALUES",
        ] {
            let error = recognized(sql).unwrap().unwrap_err();
            assert_eq!(error.code, sqlstate::SYNTAX_ERROR, "{sql}: {error}");
        }
    }

    #[test]
    fn other_statements_are_left_to_sqlparser() {
        for sql in [
            "SHOW search_path",
            "SELECT regions FROM show",
            "ALTER TABLE t ADD COLUMN split INT",
            "ALTER TABLE t RENAME TO split",
            "\"SHOW\" REGIONS",
            "SHOW",
            "",
        ] {
            assert!(recognized(sql).is_none(), "{sql}");
        }
    }
}
