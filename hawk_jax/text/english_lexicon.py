"""Closed-class English words and common verbs with their inflections, for the rules
motion-text parser (`hawk_jax.text.motion_text`).

The verb list covers what anomaly descriptions and video captions say people, vehicles and
animals do; `verb_forms()` inflects it (regular rules, a doubling list and an irregular table)
into {surface form: [(lemma, form)]} with form one of BASE, PRES3, PAST, PART, GER.
"""
from __future__ import annotations

import functools

BASE, PRES3, PAST, PART, GER = "BASE", "PRES3", "PAST", "PART", "GER"

DETERMINERS = frozenset("""a an the this these those some any each every another no his their its
my your our several many few both all either neither such""".split())
NUMBERS = frozenset("""one two three four five six seven eight nine ten eleven twelve twenty
dozens dozen hundreds""".split())
SUBJECT_PRONOUNS = frozenset("""i you he she it we they someone somebody everyone everybody anyone
anybody nobody something nothing everything there""".split())
OBJECT_PRONOUNS = frozenset("""me him her us them himself herself themselves itself myself
yourself anything""".split())
RELATIVES = frozenset("who whom which whose".split())  # "that" is decided in context
PREPOSITIONS = frozenset("""in on at of with by from into onto over under across through along near
behind beside besides between toward towards around against inside outside past without within
above below upon for about like among beneath via amid off down up out than despite throughout
alongside opposite during beyond underneath""".split())
# Prepositions that also open clauses ("after the car hits him"); decided by look-ahead.
CLAUSE_PREPOSITIONS = frozenset("after before until till since as".split())
SUBORDINATORS = frozenset("while when whereas because although though if unless once whenever "
                          "where so".split())
COORDINATORS = frozenset("and or but nor".split())
BE = frozenset("is are was were be been being am 're 'm".split())
HAVE = frozenset("has have had 've".split())
DO = frozenset("do does did".split())
MODALS = frozenset("can could will would shall should may might must 'll 'd cannot ca wo".split())
NEGATIONS = frozenset("not n't never".split())
ADVERBS = frozenset("""then also still again very too just soon now later already almost here
together even only quite rather nearly suddenly eventually finally immediately quickly slowly
away back forward forwards backward backwards apart aside around instead meanwhile afterwards
seemingly apparently nearby""".split())
# Particles that make a verb transitive-phrasal ("picks up the bag": the bag is its object).
PARTICLES = frozenset("up down out off away over back around".split())
TRANSITIVE_PARTICLE_VERBS = frozenset("""pick knock put throw take pull tear set shut lift hold beat
blow turn give bring cut break push kick shoot run""".split())
DIRECTIONS = frozenset("left right".split())
ADJECTIVES = frozenset("""red blue green yellow black white gray grey brown orange pink purple dark
bright big small large little tall short long huge tiny young old elderly other same different
unusual abnormal normal sudden dangerous violent heavy empty crowded busy wet slippery narrow wide
fast slow high low drunk unconscious wrong front main public suspicious aggressive strange
physical multiple first second third last next entire whole scared frightened tired armed masked
worried excited surprised confused angry injured safe unsafe fallen illegal serious
minor major loud quiet calm unattended abandoned various own""".split())
# Nouns ending in -ing / -ly / -ed that are not verb forms or adverbs.
NOUNS = frozenset("""parking building ceiling evening morning clothing thing things something
nothing anything everything railing wedding meeting ring king sibling awning housing family
belly ally rally bully jelly assembly fly reply supply hoodie bed shed sled""".split())
# Nouns that double as verbs (a fight / they fight): a compound-noun head before a finite verb.
NOUN_VERBS = frozenset("""crash fight fire smoke light stop park walk run fall kick push attack race
cross crowd jump drop turn ride slide shot block sign line rest play dance step wave check lift
trip plant watch look face head hand show cut break start end drive drink hit fear help work film
brake signal jam collision""".split())

VERBS = """
walk run fall collide crash fight hit kick push punch throw steal grab chase drive ride cross
stop turn jump climb attack break enter leave move slip roll drop carry hold stand sit lie fire
explode burn wave argue loiter skateboard speed overtake rob shoot stab beat knock pull drag trip
fly swing wander stumble flee escape hurry rush race jog dance play fight struggle wrestle hug
kiss slap shove bump hurt injure kill die bleed collapse faint crawl lean hang climb smash shatter
damage destroy vandalize spray paint write draw open close lock unlock pick put place set take
give bring send hand throw toss catch kick bounce spin slide skid swerve reverse park pass
overtake follow approach circle gather crowd surround block stand watch look see stare notice
point shout scream yell cry call talk speak tell ask answer laugh smile wait sit rest sleep wake
eat drink smoke light burn fire shoot aim threaten rob loot snatch pickpocket steal hide search
chase catch arrest handcuff help rescue save carry lift load unload deliver install repair fix
clean sweep mop cook serve sell buy pay count check enter exit leave arrive return go come get
make keep let begin start end finish continue try want need seem appear happen occur cause lead
show become remain stay turn hurt fall rise sink float swim drown flood spread blow shake tear cut
dig build wear remove change cover fill empty pour spill leak hold grab touch hit strike bite
kick beat step stomp trample run sprint dash walk stroll march pace limp hop skip leap bounce
tumble topple flip overturn roll skate ski cycle bike crash jam honk brake accelerate speed
collide ram hit rear-end sideswipe merge yield wait queue board alight ride drive steer halt stop
pause linger loiter trespass climb vault scale jump fight attack assault hurt injure kill die
allow lose fail manage decide attempt refuse avoid prevent ignore observe record capture film
use abandon overturn tailgate disperse riot protest push pursue knock tackle strangle choke grip
swipe slash kidnap drag steal trip wobble sway stagger lose lie kneel crouch bend duck dodge
evade ignore obstruct invade intrude break burgle shoplift find
prohibit forbid permit ban""".split()

IRREGULAR = {  # lemma: (past, participle)
    "fall": ("fell", "fallen"), "run": ("ran", "run"), "hit": ("hit", "hit"),
    "fight": ("fought", "fought"), "throw": ("threw", "thrown"), "steal": ("stole", "stolen"),
    "break": ("broke", "broken"), "drive": ("drove", "driven"), "ride": ("rode", "ridden"),
    "leave": ("left", "left"), "get": ("got", "gotten"), "take": ("took", "taken"),
    "give": ("gave", "given"), "see": ("saw", "seen"), "go": ("went", "gone"),
    "come": ("came", "come"), "hold": ("held", "held"), "stand": ("stood", "stood"),
    "sit": ("sat", "sat"), "lie": ("lay", "lain"), "catch": ("caught", "caught"),
    "bring": ("brought", "brought"), "beat": ("beat", "beaten"), "shoot": ("shot", "shot"),
    "fly": ("flew", "flown"), "blow": ("blew", "blown"), "strike": ("struck", "struck"),
    "swing": ("swung", "swung"), "hang": ("hung", "hung"), "speak": ("spoke", "spoken"),
    "tell": ("told", "told"), "make": ("made", "made"), "put": ("put", "put"),
    "cut": ("cut", "cut"), "set": ("set", "set"), "let": ("let", "let"),
    "begin": ("began", "begun"), "drink": ("drank", "drunk"), "eat": ("ate", "eaten"),
    "wear": ("wore", "worn"), "tear": ("tore", "torn"), "hide": ("hid", "hidden"),
    "bite": ("bit", "bitten"), "rise": ("rose", "risen"), "spin": ("spun", "spun"),
    "slide": ("slid", "slid"), "sink": ("sank", "sunk"), "swim": ("swam", "swum"),
    "lead": ("led", "led"), "keep": ("kept", "kept"), "sleep": ("slept", "slept"),
    "sweep": ("swept", "swept"), "dig": ("dug", "dug"), "shake": ("shook", "shaken"),
    "write": ("wrote", "written"), "draw": ("drew", "drawn"), "sell": ("sold", "sold"),
    "send": ("sent", "sent"), "build": ("built", "built"), "hurt": ("hurt", "hurt"),
    "pay": ("paid", "paid"), "become": ("became", "become"), "flee": ("fled", "fled"),
    "buy": ("bought", "bought"), "wake": ("woke", "woken"), "overtake": ("overtook", "overtaken"),
    "spread": ("spread", "spread"), "leap": ("leapt", "leapt"), "light": ("lit", "lit"),
    "seek": ("sought", "sought"), "lose": ("lost", "lost"), "kneel": ("knelt", "knelt"),
    "bend": ("bent", "bent"), "find": ("found", "found"),
}
DOUBLING = frozenset("""stop grab drop slip rob jog hug trip step drag stab nod pat skid plan
shop scrub rub hop skip ram flip jam dip sob""".split())
_VOWELS = set("aeiou")


def _third_person(lemma: str) -> str:
  if lemma in ("go", "do"):
    return lemma + "es"
  if lemma.endswith(("s", "x", "z", "ch", "sh")):
    return lemma + "es"
  if lemma.endswith("y") and lemma[-2] not in _VOWELS:
    return lemma[:-1] + "ies"
  return lemma + "s"


def _regular_past(lemma: str) -> str:
  if lemma.endswith("e"):
    return lemma + "d"
  if lemma.endswith("y") and lemma[-2] not in _VOWELS:
    return lemma[:-1] + "ied"
  if lemma in DOUBLING:
    return lemma + lemma[-1] + "ed"
  return lemma + "ed"


def _gerund(lemma: str) -> str:
  if lemma.endswith("ie"):
    return lemma[:-2] + "ying"
  if lemma.endswith("e") and not lemma.endswith(("ee", "ye", "oe")):
    return lemma[:-1] + "ing"
  if lemma in DOUBLING or lemma in ("run", "swim", "sit", "set", "put", "cut", "let", "hit",
                                    "get", "begin", "spin", "dig", "shop"):
    return lemma + lemma[-1] + "ing"
  return lemma + "ing"


@functools.lru_cache(maxsize=1)
def verb_forms() -> dict[str, tuple[tuple[str, str], ...]]:
  """{surface: ((lemma, form), ...)} for every verb in VERBS."""
  forms: dict[str, list[tuple[str, str]]] = {}

  def add(surface, lemma, form):
    readings = forms.setdefault(surface, [])
    if (lemma, form) not in readings:
      readings.append((lemma, form))

  for lemma in sorted(set(VERBS)):
    past, participle = IRREGULAR.get(lemma, (_regular_past(lemma),) * 2)
    add(lemma, lemma, BASE)
    add(_third_person(lemma), lemma, PRES3)
    add(past, lemma, PAST)
    add(participle, lemma, PART)
    add(_gerund(lemma), lemma, GER)
  return {k: tuple(v) for k, v in forms.items()}
