from retort.evaluate.answers import contains_match, exact_match


def test_contains_match_needs_whole_words_and_ignores_case_and_accents():
    assert contains_match("The capital of Iceland is Reykjavík.", "Reykjavik")
    assert contains_match("It is PARIS", "Paris")
    assert not contains_match("Parisian food", "Paris")


def test_numbers_match_their_words_both_ways():
    assert contains_match("A spider has eight legs.", "8")
    assert contains_match("There are 7 days.", "seven")
    assert not contains_match("There are 17 days.", "7")


def test_exact_match_compares_the_whole_answer():
    assert exact_match("  Tokyo. ", "tokyo")
    assert not exact_match("Tokyo is the capital", "Tokyo")
