//! What the sink removes before a text is stored: the codes inside verification messages.

use sms_core::events::MessageKind;

/// Runs of this many digits are taken for a code and masked.
const CODE_DIGITS: std::ops::RangeInclusive<usize> = 4..=8;

/// The text as stored: verification codes with every run of 4 to 8 digits
/// (ASCII or full-width) replaced by as many `*`; other kinds unchanged.
/// Longer runs (phone numbers, order numbers) are not codes and stay.
pub fn stored_text(kind: MessageKind, text: &str) -> String {
    match kind {
        MessageKind::VerificationCode => mask_codes(text),
        MessageKind::Notice | MessageKind::Reminder => text.to_string(),
    }
}

/// Replaces every maximal run of 4 to 8 digits with `*`s, except inside the
/// sender's signature in `【】` (`【交管12123】` is not a code).
pub fn mask_codes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let mut run_chars = 0usize;
    let mut in_signature = false;
    for c in text.chars() {
        if is_digit(c) {
            run.push(c);
            run_chars += 1;
            continue;
        }
        flush_run(&mut out, &mut run, &mut run_chars, in_signature);
        match c {
            '【' => in_signature = true,
            '】' => in_signature = false,
            _ => {}
        }
        out.push(c);
    }
    flush_run(&mut out, &mut run, &mut run_chars, in_signature);
    out
}

fn flush_run(out: &mut String, run: &mut String, run_chars: &mut usize, keep: bool) {
    if !keep && CODE_DIGITS.contains(run_chars) {
        out.extend(std::iter::repeat_n('*', *run_chars));
    } else {
        out.push_str(run);
    }
    run.clear();
    *run_chars = 0;
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || ('\u{FF10}'..='\u{FF19}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_four_to_eight_digits_are_masked() {
        assert_eq!(
            mask_codes("【交管12123】您的验证码是483920，5分钟内有效"),
            "【交管12123】您的验证码是******，5分钟内有效"
        );
        assert_eq!(mask_codes("code 1234 or 12345678"), "code **** or ********");
        assert_eq!(mask_codes("验证码：１２３４５６"), "验证码：******");
    }

    #[test]
    fn short_and_long_digit_runs_stay() {
        assert_eq!(mask_codes("5 min, 123"), "5 min, 123");
        assert_eq!(
            mask_codes("call 8613012345678"),
            "call 8613012345678",
            "a phone number is not a code"
        );
    }

    #[test]
    fn only_verification_codes_are_masked() {
        let text = "您的车辆年检日期为20261203";
        assert_eq!(stored_text(MessageKind::Notice, text), text);
        assert_eq!(
            stored_text(MessageKind::VerificationCode, text),
            "您的车辆年检日期为********"
        );
    }
}
