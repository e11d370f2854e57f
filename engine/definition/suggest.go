package definition

import (
	"strings"
	"unicode/utf8"
)

// suggest returns the candidate closest to s when it is close enough to be a
// likely typo (edit distance at most 2, or one is a prefix of the other), or
// "" when nothing is close. Ties go to the earlier candidate. The work of all
// suggestions of one file is bounded by p.suggestBudget (every candidate
// looked at costs its length, every edit distance its cells): once it is
// spent, suggest returns "", so a file with thousands of misspelt names
// cannot make the checks quadratic.
func (p *parser) suggest(s string, candidates []string) string {
	best, bestDist := "", 3
	if len(s) > 64 {
		return ""
	}
	ls := strings.ToLower(s)
	for _, c := range candidates {
		if p.suggestBudget <= 0 {
			return ""
		}
		p.suggestBudget -= len(c) + 1
		if c == s || len(c) > 64 {
			continue
		}
		lc := strings.ToLower(c)
		prefix := len(ls) >= 3 && len(lc) >= 3 && (strings.HasPrefix(lc, ls) || strings.HasPrefix(ls, lc))
		var d int
		switch rs, rc := utf8.RuneCountInString(ls), utf8.RuneCountInString(lc); {
		case rs-rc <= 2 && rc-rs <= 2:
			// Only lengths at most 2 apart can be at distance 2 or less.
			p.suggestBudget -= (rs + 1) * (rc + 1)
			d = levenshtein(ls, lc)
			if d > 2 && prefix {
				d = 2
			}
		case prefix:
			d = 2
		default:
			continue
		}
		if d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// levenshtein is the edit distance between a and b, counted in runes.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
