"""English noun singularisation that works offline: suffix rules plus lists of exceptions.

The original CHAIR code used ``pattern.en.singularize`` (unmaintained, and it needs downloads).
These rules aim at the nouns of captions: ``people -> person``, ``women -> woman``, ``mice ->
mouse``, ``knives -> knife``, ``buses -> bus``, ``glasses -> glass`` while ``glass``, ``bus``,
``scissors`` and ``sheep`` stay as they are. Words that are not plural nouns come out unchanged or
changed harmlessly (``has -> ha``); callers only care about words that land in their vocabulary.
"""

from __future__ import annotations

IRREGULAR: dict[str, str] = {
    "people": "person", "persons": "person", "men": "man", "women": "woman", "children": "child",
    "mice": "mouse", "geese": "goose", "teeth": "tooth", "feet": "foot", "oxen": "ox", "dice": "die",
    "lice": "louse", "cacti": "cactus", "fungi": "fungus", "octopi": "octopus", "alumni": "alumnus",
    "criteria": "criterion", "phenomena": "phenomenon", "larvae": "larva", "antennae": "antenna",
    "indices": "index", "matrices": "matrix", "vertices": "vertex", "appendices": "appendix",
    "busses": "bus", "quizzes": "quiz", "axes": "axis", "analyses": "analysis", "bases": "base",
    "crises": "crisis", "theses": "thesis", "oases": "oasis", "diagnoses": "diagnosis",
    "knives": "knife", "wives": "wife", "lives": "life", "wolves": "wolf", "halves": "half",
    "calves": "calf", "leaves": "leaf", "loaves": "loaf", "shelves": "shelf", "scarves": "scarf",
    "thieves": "thief", "elves": "elf", "selves": "self", "hooves": "hoof", "dwarves": "dwarf",
    "wharves": "wharf", "sheaves": "sheaf", "pocketknives": "pocketknife", "jackknives": "jackknife",
    "headaches": "headache", "mustaches": "mustache", "moustaches": "moustache", "niches": "niche",
    "caches": "cache", "quiches": "quiche", "avalanches": "avalanche", "psyches": "psyche",
    "tomatoes": "tomato", "potatoes": "potato", "heroes": "hero", "echoes": "echo", "torpedoes": "torpedo",
    "volcanoes": "volcano", "mosquitoes": "mosquito", "dominoes": "domino", "vetoes": "veto",
    "mangoes": "mango", "buffaloes": "buffalo", "tornadoes": "tornado", "cargoes": "cargo",
    "gases": "gas", "lenses": "lens", "canvases": "canvas", "atlases": "atlas", "aliases": "alias",
    "irises": "iris", "pelvises": "pelvis", "penises": "penis", "tennises": "tennis",
    "dies": "die", "ties": "tie", "pies": "pie", "lies": "lie",
}

#: Words that look plural but are not, or do not change.
UNCHANGED = frozenset("""
sheep fish deer species series news scissors pants jeans shorts trousers goggles binoculars pliers
tongs clothes cattle aircraft spacecraft watercraft hovercraft moose bison salmon trout swine
offspring headquarters means physics mathematics athletics gymnastics economics politics ethics
chess glass grass class mass bass brass boss moss dress press cross kiss gas bus minibus lens
canvas atlas alias iris tennis chassis debris corps status campus virus bonus cactus octopus
circus walrus platypus census apparatus hippopotamus syllabus abacus thesaurus chorus corpus
fungus stimulus genus sinus omnibus trolleybus this his its is was has does yes us thus plus
always perhaps across towards afterwards downstairs upstairs outdoors indoors overseas
mathematics measles mumps diabetes rabies herpes billiards darts dominoes checkers its
""".split())

#: Nouns in -ie whose plural is -ies (so "-ies -> -y" would be wrong).
_IE_NOUNS = frozenset("""
cookie movie collie brownie hoodie goalie selfie zombie rookie smoothie bootie pixie sweetie
birdie beanie cutie hippie genie calorie prairie lingerie veggie doggie budgie yorkie kiddie
auntie bookie walkie talkie necktie bowtie magpie pinkie hottie sortie eyrie specie freebie
newbie junkie groupie indie techie boogie bogie foodie
""".split())

#: Nouns in -us whose plural is -uses (so "-uses -> -use" would be wrong).
_US_NOUNS = frozenset("""
bus minibus trolleybus omnibus schoolbus autobus virus bonus campus circus walrus octopus
platypus cactus census status apparatus hippopotamus syllabus abacus thesaurus chorus corpus
fungus stimulus prospectus genus sinus focus crocus hibiscus citrus asparagus lotus
""".split())

#: Singular nouns in -is (besides all in -sis), so "taxis -> taxi" does not make "tennis -> tenni".
_IS_NOUNS = frozenset("""
tennis iris axis pelvis penis chassis this his trellis mantis epidermis cannabis marquis
metropolis acropolis chrysalis ibis hubris pubis clitoris bis
""".split())

#: "-men" words that are not plurals of "-man".
_NOT_MAN = frozenset("ramen omen amen semen specimen abdomen stamen hymen regimen acumen bitumen lumen yemen carmen".split())


def singularize(word: str) -> str:
    """The singular of a lower-case English noun (unchanged if it does not look plural)."""
    w = word
    if len(w) <= 2 or not w.isalpha() or w in UNCHANGED:
        return w
    if w in IRREGULAR:
        return IRREGULAR[w]
    if w.endswith("men") and w not in _NOT_MAN and len(w) > 3:
        return w[:-3] + "man"
    if not w.endswith("s") or w.endswith(("ss", "us")):
        return w  # glass, cactus
    if w.endswith("is"):
        return w if (w.endswith("sis") or w in _IS_NOUNS) else w[:-1]  # tennis, analysis; taxis, skis
    if w.endswith("ies"):
        if len(w) <= 4 or w[:-1] in _IE_NOUNS:
            return w[:-1]
        return w[:-3] + "y"
    if w.endswith("ves"):
        return w[:-1]  # stoves, gloves, olives (irregular -f/-fe plurals are listed above)
    if w.endswith("uses"):
        return w[:-2] if w[:-2] in _US_NOUNS else w[:-1]
    if w.endswith("sses"):
        return w[:-2]
    if w.endswith(("xes", "ches", "shes", "zzes")):
        return w[:-2]
    if w.endswith("oes"):
        return w[:-1]  # shoes, toes, canoes (tomatoes etc. are listed above)
    return w[:-1]
