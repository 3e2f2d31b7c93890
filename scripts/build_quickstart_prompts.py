"""Build the built-in prompt set for ``retort quickstart``.

Writes ``src/retort/quickstart/prompts.jsonl``: short prompts sized for SmolLM2-135M-Instruct
on a CPU (every answer should fit in ~48 tokens). One JSON object per line::

    {"id": "capital-001", "prompt": "What is the capital of France?", "reference": "Paris"}

``reference`` appears only where the answer is checkable (capital, arith, fact, classify).
Numeric references use digits ("7", not "seven"); city names are plain ASCII ("Brasilia").
Records are shuffled across categories so any prefix of the file is a mixed sample; ids keep
their per-category numbering.

The output is deterministic (fixed tables, ``random.Random(0)``), so rebuilding it gives a
byte-identical file. Rebuild from the repo root with:

    python scripts/build_quickstart_prompts.py

Standard library only, Python 3.11.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_PATH = REPO_ROOT / "src" / "retort" / "quickstart" / "prompts.jsonl"
MAX_WORDS = 40  # keeps prompt + a ~48-token answer cheap on CPU


def items(block: str) -> list[str]:
    """Entries of a table block: split on newlines and on ``|``, stripped, empties dropped."""
    return [e.strip() for ln in block.splitlines() for e in ln.split("|") if e.strip()]


def pairs(block: str) -> list[tuple[str, str]]:
    """Entries of the form ``left = right`` (see ``items``) as tuples."""
    out = []
    for entry in items(block):
        left, right = entry.split(" = ")  # ValueError on a malformed row, by design
        out.append((left.strip(), right.strip()))
    return out


# --- capital -------------------------------------------------------------------------------
# Only countries whose capital is uncontested and has one common English spelling. Left out on
# purpose: Bolivia, South Africa, Israel, Netherlands, Switzerland, Sri Lanka, Myanmar,
# Tanzania, Kazakhstan, Ukraine (Kyiv/Kiev), and capitals usually written with accents.
CAPITALS = pairs("""
France = Paris | Japan = Tokyo | Germany = Berlin | Italy = Rome | Spain = Madrid
Portugal = Lisbon | the United Kingdom = London | Ireland = Dublin | Russia = Moscow
China = Beijing | India = New Delhi | Egypt = Cairo | Kenya = Nairobi | Canada = Ottawa
Mexico = Mexico City | Argentina = Buenos Aires | Peru = Lima | Chile = Santiago
Venezuela = Caracas | Cuba = Havana | Australia = Canberra | New Zealand = Wellington
Norway = Oslo | Sweden = Stockholm | Finland = Helsinki | Denmark = Copenhagen
Iceland = Reykjavik | Poland = Warsaw | Austria = Vienna | Hungary = Budapest
Greece = Athens | Turkey = Ankara | the Czech Republic = Prague | Belgium = Brussels
Thailand = Bangkok | Vietnam = Hanoi | South Korea = Seoul | North Korea = Pyongyang
the Philippines = Manila | Iran = Tehran | Iraq = Baghdad | Saudi Arabia = Riyadh
Pakistan = Islamabad | Afghanistan = Kabul | Nepal = Kathmandu | Bangladesh = Dhaka
Nigeria = Abuja | Ghana = Accra | Ethiopia = Addis Ababa | Morocco = Rabat | Tunisia = Tunis
Senegal = Dakar | Uganda = Kampala | Rwanda = Kigali | Zimbabwe = Harare | Brazil = Brasilia
Romania = Bucharest | Bulgaria = Sofia | Serbia = Belgrade | Croatia = Zagreb
Slovakia = Bratislava | Estonia = Tallinn | Latvia = Riga | Lithuania = Vilnius
Jordan = Amman | Lebanon = Beirut | Qatar = Doha | Cambodia = Phnom Penh | Jamaica = Kingston
Ecuador = Quito | Uruguay = Montevideo | Libya = Tripoli | Armenia = Yerevan | Albania = Tirana
the United States = Washington
""")
CAPITAL_TEMPLATES = items("""
What is the capital of {c}? | What is the capital city of {c}? | Name the capital of {c}.
Which city is the capital of {c}? | Tell me the capital city of {c}. Answer with just the city name.
""")


def build_capitals(rng: random.Random) -> list[dict]:
    rows = CAPITALS[:]
    rng.shuffle(rows)  # so each template lands on a mix of regions
    out = []
    for i, (country, city) in enumerate(rows):
        template = CAPITAL_TEMPLATES[i % len(CAPITAL_TEMPLATES)]
        out.append({"prompt": template.format(c=country), "reference": city})
    return out


# --- arith ---------------------------------------------------------------------------------
ADD_TEMPLATES = items("""
What is {a} + {b}? | What is {a} plus {b}? | Compute {a} + {b}. | Add {a} and {b}.
Calculate the sum of {a} and {b}.
Sam has {a} marbles and finds {b} more. How many marbles does Sam have now?
""")
SUB_TEMPLATES = items("""
What is {a} - {b}? | What is {a} minus {b}? | Compute {a} - {b}. | Subtract {b} from {a}.
There are {a} birds on a fence and {b} fly away. How many birds are left?
""")
MUL_TEMPLATES = items("""
What is {a} times {b}? | Compute {a} times {b}. | Multiply {a} by {b}.
What is {a} multiplied by {b}? | What is the product of {a} and {b}?
A box holds {a} eggs. How many eggs are in {b} boxes?
""")
ARITH_PER_OP = 24


def build_arith(rng: random.Random) -> list[dict]:
    """Random small problems: a + b < 100, a - b > 0, factors 2..12; no repeated pair."""
    out: list[dict] = []
    seen: set[tuple] = set()

    def draw(op, templates, pick, result):
        made = 0
        while made < ARITH_PER_OP:
            a, b = pick()
            # 7+5 and 5+7 would be near-duplicates; a-b is order-sensitive so keep it as is.
            key = (op, *sorted((a, b))) if op in "+*" else (op, a, b)
            if key in seen:
                continue
            seen.add(key)
            prompt = templates[made % len(templates)].format(a=a, b=b)
            out.append({"prompt": prompt, "reference": str(result(a, b))})
            made += 1

    def pick_add():
        a = rng.randint(2, 89)
        return a, rng.randint(2, 99 - a)

    def pick_sub():
        a = rng.randint(11, 99)
        return a, rng.randint(2, a - 1)

    def pick_mul():
        return rng.randint(2, 12), rng.randint(2, 12)

    draw("+", ADD_TEMPLATES, pick_add, lambda a, b: a + b)
    draw("-", SUB_TEMPLATES, pick_sub, lambda a, b: a - b)
    draw("*", MUL_TEMPLATES, pick_mul, lambda a, b: a * b)
    return out


# --- fact ----------------------------------------------------------------------------------
# Numeric answers are digits. No single-letter or "0" references (e.g. oxygen's "O", water's
# freezing point): a substring grader would find those inside almost any answer.
FACTS = pairs("""
How many days are in a week? = 7 | How many legs does a spider have? = 8
How many legs does an insect have? = 6 | How many sides does a triangle have? = 3
How many sides does a hexagon have? = 6 | How many sides does an octagon have? = 8
How many months are in a year? = 12 | How many hours are in a day? = 24
How many minutes are in an hour? = 60 | How many days are in a leap year? = 366
How many continents are there on Earth? = 7 | How many planets are in our solar system? = 8
How many strings does a standard guitar have? = 6 | How many wheels does a bicycle have? = 2
How many players does a soccer team have on the field at once? = 11
How many cents are in a US dollar? = 100 | How many degrees are in a right angle? = 90
How many centimeters are in a meter? = 100 | How many grams are in a kilogram? = 1000
At sea level, water boils at how many degrees Celsius? = 100
How many letters are in the English alphabet? = 26 | What is the square root of 81? = 9
What color is the sky on a clear day? = blue | What color is a ripe banana? = yellow
What color do you get by mixing blue and yellow paint? = green
What color do you get by mixing red and white paint? = pink
What is the chemical symbol for gold? = Au | What is the chemical symbol for iron? = Fe
What is the chemical symbol for sodium? = Na | What is the chemical symbol for silver? = Ag
What is the chemical formula for water? = H2O
What gas do plants take in from the air to make food? = carbon dioxide
What is the largest planet in our solar system? = Jupiter
Which planet is closest to the Sun? = Mercury | Which planet is known as the Red Planet? = Mars
What is the largest ocean on Earth? = Pacific
What is the tallest mountain in the world above sea level? = Everest
What is the largest animal on Earth? = blue whale | What is the fastest land animal? = cheetah
What sweet food do bees make? = honey | What is frozen water called? = ice
What is the opposite of hot? = cold | What is the plural of mouse? = mice
What is the plural of child? = children | Who wrote the play Romeo and Juliet? = Shakespeare
What language is mainly spoken in Brazil? = Portuguese | What is the currency of Japan? = yen
On which continent is Kenya? = Africa | Which organ pumps blood through the human body? = heart
What fruit is the main ingredient in guacamole? = avocado
Which musical instrument usually has 88 keys? = piano
What shape has four equal sides and four right angles? = square
What do you call a baby cat? = kitten | What is the largest organ of the human body? = skin
Which metal is liquid at room temperature? = mercury
""")


def build_facts(rng: random.Random) -> list[dict]:
    return [{"prompt": q, "reference": a} for q, a in FACTS]


# --- explain -------------------------------------------------------------------------------
EXPLAIN_TOPICS = items("""
photosynthesis | how a rainbow forms | the water cycle | how vaccines help the body
what gravity does | how a compass works | the difference between weather and climate
how yeast makes bread rise | how the internet sends data between computers
what a computer's memory is for | how a refrigerator keeps food cold | the greenhouse effect
how bees make honey | why the printing press was important | what causes ocean tides
how a seed grows into a plant | how an airplane wing creates lift | how a battery stores energy
why passwords should be long | how composting works | how a volcano erupts
how a thermometer measures temperature | how recycling helps the environment
how the heart moves blood around the body | how lightning forms
how a search engine finds web pages | what a spreadsheet is used for
how fermentation turns milk into yogurt | how a solar panel makes electricity
how a microwave oven heats food
""")
EXPLAIN_TEMPLATES = items("""
Explain {t} in one or two sentences. | In simple words, explain {t}.
For a ten-year-old, briefly explain {t}.
""")
# Full questions rather than templates: "why" and "what is" read badly when generated.
QUESTIONS = items("""
Why is the sky blue? | Why do leaves change color in autumn? | Why does ice float on water?
Why does Earth have seasons? | Why does bread go stale? | Why do onions make people cry when cut?
Why does the Moon seem to change shape during the month? | Why do many birds migrate in winter?
Why does metal feel colder than wood at the same temperature? | Why do people need sleep?
Why does a spoon look bent in a glass of water? | Why do apples turn brown after being cut?
Why does popcorn pop? | Why do computers need cooling fans? | Why is salt spread on icy roads?
Why do we see lightning before we hear thunder? | Why do bears hibernate?
Why do stars twinkle at night? | Why is ocean water salty? | Why does soap help remove grease?
Why do heavy steel ships float? | Why do plants need sunlight? | Why do zebras have stripes?
Why did the ancient Romans build aqueducts? | Why should you wash your hands before cooking?
Why does a kettle whistle when the water boils? | Why do websites use encryption?
Why does a dropped ball eventually stop bouncing? | Why do we get goosebumps?
Why do cut flowers last longer in water?
What is a black hole? | What is an algorithm? | What is a verb? | What is inflation in economics?
What is a food chain? | What is DNA? | What is a database? | What is an ecosystem?
What is a glacier? | What is a programming language? | What is a leap year? | What is a fossil?
What does 'mise en place' mean in cooking? | What is a simile? | What is a prime number?
What is cloud storage? | What is a democracy? | What is an atom? | What is sourdough bread?
What is a habitat? | What is a hurricane? | What is a web browser? | What was the Silk Road?
What is a compiler? | What is erosion? | What is a solar eclipse? | What is caramelization?
What is a coral reef? | What was the Industrial Revolution? | What is a pixel?
""")


def build_explain(rng: random.Random) -> list[dict]:
    out = []
    for i, topic in enumerate(EXPLAIN_TOPICS):
        out.append({"prompt": EXPLAIN_TEMPLATES[i % len(EXPLAIN_TEMPLATES)].format(t=topic)})
    return out + [{"prompt": q} for q in QUESTIONS]


# --- rewrite -------------------------------------------------------------------------------
# Each task has its own sentences, because the input must suit the task: only a sentence with
# errors can have its grammar fixed, only a casual one can be made formal, and so on.
REWRITE_TASKS: dict[str, str] = {  # "template | alternate template": sentences
    "Rewrite this sentence in a formal tone: '{s}' | Make this sentence more formal: '{s}'": """
hey, can you send me that report asap? | the meeting got moved, so don't bother coming at nine.
thanks a ton for helping out with the move! | we gotta fix this bug before the weekend.
sorry, i totally forgot to call you back. | the new cafe downstairs is pretty awesome.
can't make it tonight, something came up. | your plan sounds cool, let's go for it.
the printer's broken again, ugh. | just checking if you got my last email.
""",
    "Rewrite this sentence in a casual, friendly tone: '{s}' | Make this informal: '{s}'": """
We regret to inform you that the event has been postponed.
Kindly submit your application before the end of the month.
Your assistance with this matter is greatly appreciated.
Please ensure that all lights are switched off upon departure.
The committee has approved the proposed budget.
We would be delighted to welcome you to our home on Saturday.
Attendance at the training session is mandatory for all staff.
I am writing to request a copy of my receipt.
The library will be closed for maintenance on Monday.
Refreshments will be provided following the presentation.
""",
    "Rewrite this sentence in the passive voice: '{s}' | Change to passive voice: '{s}'": """
The chef cooked a delicious meal. | The children built a sandcastle on the beach.
A strong wind knocked down the old fence. | The teacher graded the exams over the weekend.
Our neighbor painted the garden shed blue. | The mechanic repaired the car in one hour.
The students planted ten trees in the park. | A small dog chased the mail carrier.
The museum displays ancient pottery. | The team won the championship last year.
""",
    "Shorten this sentence without losing its meaning: '{s}' | Make this concise: '{s}'": """
Due to the fact that it was raining very heavily, we made the decision to stay inside.
At this point in time, we are not able to accept any new orders from customers.
In my personal opinion, I think that the movie was far too long.
She walked very slowly and carefully across the icy and slippery sidewalk.
The reason why the train was late is because there was a problem with the signals.
We will hold a meeting for the purpose of discussing the plans for the new year.
He is a person who is always willing and ready to help other people.
It is absolutely essential that every single student brings a pencil to the exam.
In the event that the store is closed, please come back again tomorrow morning.
The book that I borrowed from the library last week is very interesting to read.
""",
    "Fix the grammar in this sentence: '{s}' | Correct the mistakes in this sentence: '{s}'": """
She don't like going to the dentist. | Me and him goes to the park every sunday.
There is many reasons to learn a new language. | The cat chased it's own tail.
I seen that movie three times already. | Their going to the concert tomorrow night.
He runned all the way to school. | Everyone have finished their homework.
The apples is on the table in the kitchen. | We was late because of the traffic.
""",
    "Turn this statement into a question: '{s}' | Rewrite as a yes-or-no question: '{s}'": """
The store opens at eight in the morning. | Dolphins can sleep with one eye open.
The train to the city leaves from platform four. | Maria has finished reading the novel.
The soup needs more salt. | The museum is free on Sundays.
Penguins live in the Southern Hemisphere. | The bridge was built over a hundred years ago.
You left the window open last night. | The recipe calls for two cups of flour.
""",
    "Paraphrase this sentence using different words: '{s}' | Say this another way: '{s}'": """
The garden looks beautiful in the spring. | Regular exercise keeps the heart healthy.
The old lighthouse guided ships safely to shore. | Reading before bed helps me relax.
The town was quiet after the festival ended. | Fresh bread smells wonderful in the morning.
The hikers reached the summit just before sunset. | Learning to code takes patience.
The river flooded the fields after the storm. | A good map makes any trip easier.
""",
    "Summarize this in five words: '{s}' | Sum up this text in exactly five words: '{s}'": """
The village held its harvest fair. Farmers sold vegetables and a band played all night.
Our flight was delayed by fog. We landed after midnight, tired but happy to be home.
The new library has study rooms, a cafe and free internet. Students spend hours there.
A stray kitten appeared on our porch in a storm. We fed it, and now it will not leave.
The team practiced every morning for months. They won the final in the last minute.
Heavy snow closed the schools for three days. Children built snowmen in every yard.
The bakery began selling gluten-free bread. It sold out daily, so they baked twice as much.
Scientists found a new frog in the rainforest. It is smaller than a coin and bright orange.
Grandma taught me to knit a scarf. It took three weeks and has holes, but I love it.
The city planted thousands of street trees. Its summers are now cooler and shadier.
""",
}


def build_rewrite(rng: random.Random) -> list[dict]:
    out = []
    for task, bank in REWRITE_TASKS.items():
        templates = items(task)
        for i, sentence in enumerate(items(bank)):
            out.append({"prompt": templates[i % len(templates)].format(s=sentence)})
    return out


# --- instruct ------------------------------------------------------------------------------
INSTRUCT: dict[str, str] = {
    "Write a haiku about {x}.": """
autumn leaves | a rainy morning | the ocean | a sleeping cat | mountain snow | a city at night
the first day of spring | a cup of tea | a lighthouse | fireflies
""",
    "List three tips for {x}.": """
staying focused while studying | saving money on groceries | sleeping better
keeping houseplants alive | learning a new language | packing for a trip | cooking rice
writing a clear email | staying safe while cycling | keeping a tidy desk
""",
    "Give a short title for a story about {x}.": """
a robot who learns to paint | a lost dog finding its way home | a girl who can talk to birds
a haunted lighthouse | two friends crossing a desert | a dragon afraid of fire
a town where it never stops raining | a baker who opens a shop on the Moon
a forgotten treasure map | a pirate who gets seasick
""",
    "Write one sentence describing {x}.": """
a thunderstorm | a busy train station | the smell of fresh coffee | a snowy forest
a farmers market | the view from a mountaintop | a quiet library | a sunset over the sea
an old wooden boat | a field of sunflowers
""",
    "Suggest a name for a {x}.": """
pet goldfish | coffee shop | bakery that sells only pies | hiking club | robot vacuum cleaner
school newspaper | sailboat | board game about space | bookstore | vegetable garden blog
""",
    "Write a two-line rhyming poem about {x}.": """
a cat in the sun | rain on the roof | a morning walk | an old friend | the Moon
a bowl of soup | a windy day | a paper airplane | a new pair of shoes | the sea
""",
    "Give two reasons to {x}.": """
drink more water | learn to swim | read every day | visit a museum | walk instead of drive
keep a journal | plant a tree | learn to cook | back up your files | turn off unused lights
""",
    "Write a short, friendly message to {x}.": """
thank a neighbor for watering your plants | invite a friend to a picnic
welcome a new coworker | congratulate a friend on a new job | wish a classmate good luck
apologize for missing a meeting | thank a teacher at the end of the year
remind a friend about dinner on Friday | ask a neighbor to borrow a ladder
say goodbye to a friend who is moving away
""",
    "Describe {x} in three words.": """
the ocean | a winter morning | your favorite food | a busy city | a forest at night
a summer holiday | a library | a fireworks show | a garden after rain | a mountain lake
""",
}


def build_instruct(rng: random.Random) -> list[dict]:
    return [{"prompt": t.format(x=x)} for t, block in INSTRUCT.items() for x in items(block)]


# --- classify ------------------------------------------------------------------------------
SENTIMENT = pairs("""
I absolutely loved this movie and would watch it again. = positive
The food was cold and the waiter was rude. = negative
What a beautiful day for a picnic! = positive
My new phone stopped working after two days. = negative
The hotel staff were kind and the room was spotless. = positive
This book was boring and far too long. = negative
I am so proud of how well the team played. = positive
The concert was cancelled and nobody told us. = negative
This soup is the best thing I have eaten all week. = positive
The instructions were confusing and the parts did not fit. = negative
Our teacher made the lesson fun and easy to follow. = positive
I waited an hour and the bus never came. = negative
The garden looks wonderful after all our hard work. = positive
The shoes fell apart after one walk in the rain. = negative
""")
SENTIMENT_TEMPLATES = items("""
Is the following sentence positive or negative? '{s}'
Classify the sentiment of this review as positive or negative: '{s}'
""")
ANIMALS = pairs("""
a dolphin = mammal | a bat = mammal | a whale = mammal | a horse = mammal
a penguin = bird | an ostrich = bird | an eagle = bird | an owl = bird
a salmon = fish | a shark = fish | a tuna = fish | a goldfish = fish
a crocodile = reptile | a turtle = reptile | an iguana = reptile | a rattlesnake = reptile
""")


def build_classify(rng: random.Random) -> list[dict]:
    out = [
        {"prompt": SENTIMENT_TEMPLATES[i % 2].format(s=s), "reference": label}
        for i, (s, label) in enumerate(SENTIMENT)
    ]
    for animal, cls in ANIMALS:
        prompt = f"Is {animal} a mammal, bird, fish or reptile?"
        out.append({"prompt": prompt, "reference": cls})
    return out


# --- assembly ------------------------------------------------------------------------------
BUILDERS = {
    "capital": build_capitals,
    "arith": build_arith,
    "fact": build_facts,
    "explain": build_explain,
    "rewrite": build_rewrite,
    "instruct": build_instruct,
    "classify": build_classify,
}


def build() -> list[dict]:
    rng = random.Random(0)  # one generator, consumed in BUILDERS order, so output is stable
    records = []
    for category, builder in BUILDERS.items():
        for n, rec in enumerate(builder(rng), start=1):
            records.append({"id": f"{category}-{n:03d}", **rec})
    rng.shuffle(records)  # mix categories so any prefix (e.g. a --limit run) is a fair sample
    return records


def check(records: list[dict]) -> None:
    """Fail loudly on anything the quickstart loader or grader would trip over."""
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids), "duplicate id"
    dupes = [p for p, k in Counter(r["prompt"] for r in records).items() if k > 1]
    assert not dupes, f"duplicate prompts: {dupes}"
    for r in records:
        assert r["prompt"].strip(), r
        assert len(r["prompt"].split()) <= MAX_WORDS, f"prompt too long: {r}"
        if "reference" in r:
            assert isinstance(r["reference"], str) and r["reference"].strip(), r
    assert len(records) >= 480, len(records)


def main() -> None:
    records = build()
    check(records)
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    with OUT_PATH.open("w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    counts = Counter(r["id"].rsplit("-", 1)[0] for r in records)
    for category in BUILDERS:
        print(f"{category:10s} {counts[category]:4d}")
    print(f"{'total':10s} {len(records):4d}  -> {OUT_PATH}")


if __name__ == "__main__":
    main()
