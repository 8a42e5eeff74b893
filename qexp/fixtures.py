"""Small evaluation fixtures in the exact schema of the hub datasets behind our tasks.

The offline quick start and the tests evaluate against these instead of the real
benchmarks (which no PyPI package carries). Every run that uses them is tagged
`qexp.eval_data=fixtures`; their scores say nothing about a model's quality.

The files under `qexp/data/eval_fixtures/` are written by `write_fixtures()`;
`python -m qexp.fixtures` regenerates them and a unit test checks they are current.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["FIXTURES_DIR", "MMLU_SUBJECTS", "write_fixtures"]

FIXTURES_DIR = Path(__file__).parent / "data" / "eval_fixtures"

# ARC: mixed letter/number labels and 3-5 choices, as in allenai/ai2_arc.
# (id, question, choice texts, labels, answerKey)
_ARC_CHALLENGE = [
    ("Mercury_7001", "Which property of a mineral can be determined just by looking at it?", ["luster", "mass", "weight", "hardness"], "ABCD", "A"),
    ("Mercury_7002", "A student riding a bicycle observes that it moves faster on a smooth road than on a rough road. This happens because the smooth road has", ["less gravity", "more gravity", "less friction", "more friction"], "ABCD", "C"),
    ("Mercury_7003", "Which of these is the best evidence that Earth's crust is made of moving plates?", ["the shapes of the continents", "the height of clouds", "the phases of the Moon", "the length of a day"], "ABCD", "A"),
    ("NYSEDREGENTS_7004", "Which process converts light energy into chemical energy?", ["respiration", "photosynthesis", "digestion", "evaporation"], "1234", "2"),
    ("NYSEDREGENTS_7005", "What is the main function of the red blood cells in the human body?", ["fighting infection", "carrying oxygen", "clotting blood"], "123", "2"),
    ("Mercury_7006", "A scientist wants to find out how temperature affects the rate at which sugar dissolves. Which variable should stay the same?", ["the temperature of the water", "the amount of water", "the time to dissolve", "the rate of stirring and the temperature"], "ABCD", "B"),
    ("ACTAAP_7007", "Which form of energy is stored in a stretched rubber band?", ["elastic potential energy", "thermal energy", "sound energy", "nuclear energy", "light energy"], "ABCDE", "A"),
    ("Mercury_7008", "Which change would most likely cause a population of rabbits to decrease?", ["more rainfall", "an increase in predators", "more plants to eat", "a mild winter"], "ABCD", "B"),
    ("MCAS_7009", "Which tool is most useful for measuring the volume of a liquid?", ["a balance", "a graduated cylinder", "a thermometer", "a meter stick"], "ABCD", "B"),
    ("Mercury_7010", "Why does the Moon appear to change shape during a month?", ["Earth's shadow covers it", "clouds block part of it", "different amounts of its lit side face Earth", "it moves closer to the Sun"], "ABCD", "C"),
    ("Mercury_7011", "Which is a chemical change?", ["ice melting", "paper burning", "glass breaking", "salt dissolving"], "ABCD", "B"),
    ("Mercury_7012", "Sound travels fastest through which material?", ["air", "water", "steel", "a vacuum"], "ABCD", "C"),
]
_ARC_EASY = [
    ("Mercury_8001", "Which organ pumps blood through the body?", ["the lungs", "the heart", "the stomach", "the brain"], "ABCD", "B"),
    ("Mercury_8002", "What do plants need from the air to make food?", ["oxygen", "nitrogen", "carbon dioxide", "helium"], "ABCD", "C"),
    ("NYSEDREGENTS_8003", "Which object is a source of light?", ["the Moon", "a mirror", "the Sun", "a window"], "1234", "3"),
    ("Mercury_8004", "Water freezes at what temperature in degrees Celsius?", ["0", "32", "100"], "ABC", "A"),
    ("Mercury_8005", "Which animal is a mammal?", ["shark", "frog", "whale", "eagle"], "ABCD", "C"),
    ("MCAS_8006", "What is the closest star to Earth?", ["Polaris", "the Sun", "Sirius", "Vega", "Betelgeuse"], "ABCDE", "B"),
    ("Mercury_8007", "Which is a renewable energy source?", ["coal", "oil", "wind", "natural gas"], "ABCD", "C"),
    ("NYSEDREGENTS_8008", "Which part of a plant takes in water from the soil?", ["roots", "leaves", "flowers", "seeds"], "1234", "1"),
    ("Mercury_8009", "A magnet will attract which object?", ["a wooden spoon", "an iron nail", "a glass marble", "a rubber ball"], "ABCD", "B"),
    ("Mercury_8010", "What causes day and night on Earth?", ["Earth revolving around the Sun", "Earth rotating on its axis", "the Moon orbiting Earth", "the Sun rotating"], "ABCD", "B"),
    ("Mercury_8011", "Which state of matter has a definite shape?", ["solid", "liquid", "gas"], "ABC", "A"),
    ("Mercury_8012", "Which body system breaks down food?", ["the digestive system", "the skeletal system", "the nervous system", "the respiratory system"], "ABCD", "A"),
]

# HellaSwag: string labels, ctx = ctx_a + " " + ctx_b, WikiHow items carry bracket artifacts.
# (activity_label, ctx_a, ctx_b, endings, label, source_id, split_type)
_HELLASWAG = [
    ("Removing ice from car", "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles.", "then", [", the man adds wax to the windshield and cuts it.", ", a person board a ski lift, while two men supporting the head of the person wearing winter clothes snow as the we girls sled.", ", the man puts on a christmas coat, knitted with netting.", ", the man continues removing the snow on his car."], "3", "activitynet~v_-1IBHYS3L-Y", "indomain"),
    ("Baking cookies", "A woman mixes flour, sugar and butter in a large bowl.", "she", ["pours the batter into a swimming pool.", "scoops the dough onto a baking sheet and puts it in the oven.", "throws the bowl out of the window.", "paints the bowl with a brush."], "1", "activitynet~v_bake001", "indomain"),
    ("Home and Garden", "[header] How to clean a cast iron skillet [title] Rinse the skillet with hot water. [step] Avoid soaking the pan.", "", ["[substeps] Scrub with a stiff brush and dry it completely on the stove.", "Fill the skillet with sand and bury it in the garden.", "[title] Paint the skillet with bright colors.", "Leave the pan in the sink for a week."], "0", "wikihow~1001", "indomain"),
    ("Playing guitar", "A young man sits on a stool holding an acoustic guitar.", "he", ["strums the strings and begins to play a song.", "eats the guitar strings one by one.", "throws the stool across the stage at the audience.", "turns into a bird and flies away."], "0", "activitynet~v_guit002", "zeroshot"),
    ("Personal Care and Style", "[header] How to tie a tie [title] Drape the tie around your neck. [step] The wide end should hang lower than the narrow end.", "", ["[title] Cut the narrow end off with scissors.", "[title] Cross the wide end over the narrow end. [step] Then bring it up through the loop.", "Put the tie in the freezer overnight.", "[title] Wear the tie as a belt instead."], "1", "wikihow~1002", "zeroshot"),
    ("Washing dishes", "A person stands at a kitchen sink filled with soapy water.", "the person", ["scrubs a plate with a sponge and rinses it under the tap.", "plants tomatoes in the sink.", "reads a newspaper in the water.", "paints the window with soap."], "0", "activitynet~v_dish003", "indomain"),
    ("Running a marathon", "Hundreds of runners gather at a starting line on a city street.", "a horn sounds and", ["the runners lie down for a nap.", "the runners begin running down the street.", "the street turns into a river.", "everyone starts playing tennis."], "1", "activitynet~v_run004", "indomain"),
    ("Food and Entertaining", "[header] How to make iced tea [title] Boil water in a kettle. [step] Use about four cups of water.", "", ["[title] Pour the water on your houseplants.", "[title] Freeze the kettle.", "[title] Steep tea bags in the hot water. [step] Let them sit for five minutes, then chill the tea.", "Throw the tea bags away before using them."], "2", "wikihow~1003", "zeroshot"),
    ("Skateboarding", "A boy places his skateboard on the ground at a skate park.", "he", ["steps on the board and pushes off to ride down the ramp.", "picks up the board and uses it as a table.", "digs a hole with the skateboard.", "sings to the skateboard."], "0", "activitynet~v_skate005", "indomain"),
    ("Brushing teeth", "A little girl holds a toothbrush in front of a bathroom mirror.", "she", ["brushes her hair with the toothbrush.", "puts toothpaste on the brush and brushes her teeth.", "throws the toothbrush into the bathtub.", "draws on the mirror with the toothbrush."], "1", "activitynet~v_teeth006", "indomain"),
]

# MMLU: one hub config per subject; answer is an int index into four choices.
# (question, choices, answer); the last item of each subject goes to the `dev` split.
_MMLU: dict[str, list[tuple[str, list[str], int]]] = {
    "abstract_algebra": [("How many elements does the group Z_6 have?", ["3", "6", "12", "36"], 1), ("Which of these is a field?", ["Z_4", "Z_6", "Z_7", "Z_8"], 2), ("The identity element of a group under addition of integers is", ["0", "1", "-1", "infinity"], 0)],
    "anatomy": [("Which bone is the longest in the human body?", ["tibia", "humerus", "femur", "radius"], 2), ("The heart has how many chambers?", ["two", "three", "four", "five"], 2), ("Which organ produces bile?", ["liver", "pancreas", "spleen", "kidney"], 0)],
    "astronomy": [("Which planet is closest to the Sun?", ["Venus", "Mercury", "Mars", "Earth"], 1), ("What is the largest planet in the Solar System?", ["Saturn", "Neptune", "Jupiter", "Uranus"], 2), ("A light-year measures", ["time", "distance", "brightness", "mass"], 1)],
    "business_ethics": [("Corporate social responsibility refers to a company's duties toward", ["only its shareholders", "society and stakeholders", "only its managers", "only its competitors"], 1), ("Whistleblowing is the act of", ["reporting wrongdoing within an organization", "setting prices with competitors", "advertising a product", "hiring new staff"], 0), ("A conflict of interest arises when", ["two firms merge", "personal interests may influence professional duties", "prices rise", "a product fails"], 1)],
    "clinical_knowledge": [("A normal adult resting heart rate is about", ["20-40 beats per minute", "60-100 beats per minute", "120-160 beats per minute", "180-200 beats per minute"], 1), ("Which vitamin is made in the skin after sun exposure?", ["vitamin A", "vitamin C", "vitamin D", "vitamin K"], 2), ("Normal body temperature is about", ["33 C", "37 C", "40 C", "42 C"], 1)],
    "college_biology": [("DNA replication is described as", ["conservative", "semiconservative", "dispersive", "random"], 1), ("Which organelle produces most of a cell's ATP?", ["ribosome", "mitochondrion", "Golgi apparatus", "lysosome"], 1), ("The monomers of proteins are", ["nucleotides", "amino acids", "fatty acids", "sugars"], 1)],
    "college_chemistry": [("The pH of a neutral solution at 25 C is", ["0", "7", "10", "14"], 1), ("Avogadro's number is approximately", ["6.02 x 10^23", "3.00 x 10^8", "9.81", "1.60 x 10^-19"], 0), ("Which bond involves sharing electron pairs?", ["ionic", "covalent", "metallic", "hydrogen"], 1)],
    "college_computer_science": [("The worst-case time of binary search on n sorted items is", ["O(1)", "O(log n)", "O(n)", "O(n log n)"], 1), ("Which data structure is first-in, first-out?", ["stack", "queue", "tree", "heap"], 1), ("A deadlock requires which condition?", ["preemption", "circular wait", "unlimited resources", "a single thread"], 1)],
    "college_mathematics": [("The derivative of x^3 is", ["x^2", "3x^2", "3x", "x^4/4"], 1), ("The determinant of the 2x2 identity matrix is", ["0", "1", "2", "-1"], 1), ("The sum 1 + 2 + ... + 10 equals", ["45", "50", "55", "60"], 2)],
    "college_medicine": [("Insulin is produced by which organ?", ["liver", "pancreas", "thyroid", "adrenal gland"], 1), ("Which blood type is the universal donor for red cells?", ["A+", "B-", "AB+", "O-"], 3), ("Hemoglobin carries mainly", ["oxygen", "glucose", "sodium", "urea"], 0)],
    "college_physics": [("The SI unit of force is the", ["joule", "watt", "newton", "pascal"], 2), ("The speed of light in vacuum is about", ["3 x 10^8 m/s", "3 x 10^5 m/s", "340 m/s", "9.8 m/s"], 0), ("Kinetic energy equals", ["mv", "mv^2/2", "mgh", "ma"], 1)],
    "computer_security": [("A firewall primarily", ["filters network traffic", "encrypts disks", "compresses files", "speeds up the CPU"], 0), ("Phishing attacks usually try to", ["steal credentials by deception", "cool servers", "back up data", "patch software"], 0), ("Which is a symmetric cipher?", ["RSA", "AES", "Diffie-Hellman", "ECDSA"], 1)],
    "conceptual_physics": [("An object in motion stays in motion unless acted on by a force. This is Newton's", ["first law", "second law", "third law", "law of gravitation"], 0), ("Heat transfer through direct contact is called", ["radiation", "convection", "conduction", "reflection"], 2), ("Which wave needs a medium to travel?", ["light", "radio", "sound", "X-ray"], 2)],
    "econometrics": [("Ordinary least squares minimizes the sum of", ["absolute residuals", "squared residuals", "residuals", "fitted values"], 1), ("Heteroskedasticity means the error variance is", ["constant", "not constant", "zero", "negative"], 1), ("An R-squared of 1 means the model", ["explains none of the variation", "explains all of the variation", "is biased", "has no intercept"], 1)],
    "electrical_engineering": [("Ohm's law states that V equals", ["I/R", "IR", "R/I", "I + R"], 1), ("The unit of capacitance is the", ["henry", "farad", "ohm", "tesla"], 1), ("Resistors in series have a total resistance equal to", ["the sum of resistances", "the product of resistances", "the smallest resistance", "zero"], 0)],
    "elementary_mathematics": [("What is 7 x 8?", ["54", "56", "58", "64"], 1), ("What is one half of 18?", ["6", "8", "9", "12"], 2), ("How many sides does a hexagon have?", ["5", "6", "7", "8"], 1)],
    "formal_logic": [("If P implies Q and P is true, then", ["Q is false", "Q is true", "P is false", "nothing follows"], 1), ("The negation of 'all A are B' is", ["no A are B", "some A are not B", "all B are A", "some A are B"], 1), ("A tautology is a statement that is", ["always false", "always true", "sometimes true", "undefined"], 1)],
    "global_facts": [("About what share of Earth's surface is covered by water?", ["30%", "50%", "71%", "90%"], 2), ("Which country has the largest population as of 2023?", ["United States", "India", "Brazil", "Russia"], 1), ("Roughly how many people lived on Earth in 2020?", ["2 billion", "5 billion", "7.8 billion", "12 billion"], 2)],
    "high_school_biology": [("The basic unit of life is the", ["atom", "cell", "organ", "tissue"], 1), ("Genes are made of", ["protein", "DNA", "lipids", "starch"], 1), ("Which process produces gametes?", ["mitosis", "meiosis", "osmosis", "diffusion"], 1)],
    "high_school_chemistry": [("The atomic number of carbon is", ["4", "6", "8", "12"], 1), ("Which gas is most abundant in Earth's atmosphere?", ["oxygen", "nitrogen", "argon", "carbon dioxide"], 1), ("H2O is the formula for", ["hydrogen peroxide", "water", "ozone", "methane"], 1)],
    "high_school_computer_science": [("How many bits are in a byte?", ["4", "8", "16", "32"], 1), ("Which is a loop construct in Python?", ["if", "for", "def", "import"], 1), ("Binary 101 equals decimal", ["3", "4", "5", "6"], 2)],
    "high_school_european_history": [("The French Revolution began in", ["1689", "1789", "1848", "1914"], 1), ("The Protestant Reformation is associated with", ["Martin Luther", "Napoleon", "Charlemagne", "Bismarck"], 0), ("The Berlin Wall fell in", ["1961", "1975", "1989", "1999"], 2)],
    "high_school_geography": [("The longest river in Africa is the", ["Congo", "Niger", "Nile", "Zambezi"], 2), ("Which is the largest ocean?", ["Atlantic", "Indian", "Arctic", "Pacific"], 3), ("The capital of Australia is", ["Sydney", "Melbourne", "Canberra", "Perth"], 2)],
    "high_school_government_and_politics": [("In the United States, laws are made by", ["the Supreme Court", "Congress", "the President alone", "the states alone"], 1), ("The first ten amendments to the US Constitution are called", ["the Bill of Rights", "the Federalist Papers", "the Articles", "the Preamble"], 0), ("A US senator serves a term of", ["two years", "four years", "six years", "eight years"], 2)],
    "high_school_macroeconomics": [("Inflation is a general rise in", ["unemployment", "the price level", "interest rates only", "exports"], 1), ("GDP measures", ["the total value of final goods and services produced", "government debt", "the money supply", "the trade balance"], 0), ("A central bank raising interest rates usually aims to", ["increase inflation", "reduce inflation", "raise unemployment benefits", "print money"], 1)],
    "high_school_mathematics": [("Solve for x: 2x + 3 = 11", ["3", "4", "5", "7"], 1), ("The slope of y = 3x + 2 is", ["2", "3", "5", "1/3"], 1), ("What is the square root of 144?", ["10", "11", "12", "14"], 2)],
    "high_school_microeconomics": [("When price rises, quantity demanded usually", ["rises", "falls", "stays the same", "doubles"], 1), ("A market with a single seller is a", ["monopoly", "oligopoly", "perfect competition", "monopsony"], 0), ("Opportunity cost is the value of", ["the next best alternative forgone", "money spent", "taxes paid", "profits earned"], 0)],
    "high_school_physics": [("Acceleration due to gravity near Earth's surface is about", ["1 m/s^2", "9.8 m/s^2", "20 m/s^2", "100 m/s^2"], 1), ("Power is measured in", ["joules", "watts", "newtons", "volts"], 1), ("The unit of electric current is the", ["volt", "ohm", "ampere", "coulomb"], 2)],
    "high_school_psychology": [("Classical conditioning was studied by", ["Pavlov", "Freud", "Piaget", "Maslow"], 0), ("Short-term memory holds about how many items?", ["2", "7", "20", "100"], 1), ("The part of the brain most involved in balance is the", ["cerebellum", "frontal lobe", "hippocampus", "amygdala"], 0)],
    "high_school_statistics": [("The median of 1, 3, 5, 7, 9 is", ["3", "5", "7", "25"], 1), ("A correlation of -1 indicates", ["no relationship", "a perfect negative linear relationship", "a weak relationship", "a perfect positive relationship"], 1), ("The mean of 2, 4, 6 is", ["3", "4", "5", "6"], 1)],
    "high_school_us_history": [("The Declaration of Independence was signed in", ["1492", "1776", "1812", "1865"], 1), ("Who was the first President of the United States?", ["Thomas Jefferson", "John Adams", "George Washington", "Abraham Lincoln"], 2), ("The US Civil War ended in", ["1815", "1865", "1898", "1918"], 1)],
    "high_school_world_history": [("The Great Wall was built mainly to protect", ["Egypt", "China", "India", "Persia"], 1), ("World War I began in", ["1905", "1914", "1929", "1939"], 1), ("The Renaissance began in", ["Italy", "Russia", "Japan", "Mexico"], 0)],
    "human_aging": [("Which sense commonly declines first with age?", ["touch", "hearing of high frequencies", "smell of smoke", "taste of salt"], 1), ("Osteoporosis is a loss of", ["muscle mass", "bone density", "hair", "skin color"], 1), ("Regular exercise in older adults generally", ["speeds decline", "improves health outcomes", "has no effect", "causes dementia"], 1)],
    "human_sexuality": [("The hormone testosterone is produced mainly in the", ["testes", "liver", "lungs", "stomach"], 0), ("The X and Y chromosomes are called", ["autosomes", "sex chromosomes", "plasmids", "ribosomes"], 1), ("Puberty is triggered by hormones released by the", ["hypothalamus and pituitary", "kidneys", "skin", "heart"], 0)],
    "international_law": [("The main judicial organ of the United Nations is the", ["International Court of Justice", "Security Council", "General Assembly", "World Bank"], 0), ("A treaty is binding on states that", ["read it", "consent to it", "are neighbors", "are members of NATO"], 1), ("Diplomatic immunity is governed by the", ["Geneva Conventions", "Vienna Convention on Diplomatic Relations", "Kyoto Protocol", "Paris Agreement"], 1)],
    "jurisprudence": [("Legal positivism holds that law is", ["identical to morality", "a matter of social facts", "divine command", "natural instinct"], 1), ("Natural law theory links law to", ["morality", "economics only", "physics", "chance"], 0), ("The principle that like cases be treated alike is", ["formal justice", "anarchy", "utility", "sovereignty"], 0)],
    "logical_fallacies": [("Attacking the person instead of the argument is", ["ad hominem", "straw man", "red herring", "slippery slope"], 0), ("Misrepresenting an opponent's argument is", ["ad hominem", "straw man", "begging the question", "false dilemma"], 1), ("Presenting only two options when more exist is", ["false dilemma", "appeal to pity", "hasty generalization", "tu quoque"], 0)],
    "machine_learning": [("Overfitting means a model", ["does well on training data but poorly on new data", "does poorly on all data", "trains too slowly", "has too little capacity"], 0), ("Gradient descent updates parameters in the direction of", ["the gradient", "the negative gradient", "random noise", "the largest weight"], 1), ("k-means is an algorithm for", ["classification", "clustering", "regression", "ranking"], 1)],
    "management": [("Planning, organizing, leading and controlling are the functions of", ["marketing", "management", "accounting", "law"], 1), ("A SWOT analysis examines strengths, weaknesses, opportunities and", ["taxes", "threats", "trends", "teams"], 1), ("Span of control is the number of", ["subordinates a manager supervises", "products sold", "offices owned", "shareholders"], 0)],
    "marketing": [("The four Ps of marketing are product, price, place and", ["profit", "promotion", "people", "planning"], 1), ("Market segmentation divides a market into", ["distinct groups of buyers", "equal price bands", "countries only", "competitors"], 0), ("A brand is", ["a name or symbol that identifies a seller's goods", "a type of tax", "a legal contract", "a shipping method"], 0)],
    "medical_genetics": [("Down syndrome is caused by an extra copy of chromosome", ["13", "18", "21", "X"], 2), ("A recessive trait is expressed when an individual has", ["one copy of the allele", "two copies of the allele", "no copies", "a dominant allele"], 1), ("Cystic fibrosis is inherited in which pattern?", ["autosomal dominant", "autosomal recessive", "X-linked dominant", "mitochondrial"], 1)],
    "miscellaneous": [("How many continents are there?", ["five", "six", "seven", "eight"], 2), ("What color do you get by mixing blue and yellow?", ["green", "purple", "orange", "brown"], 0), ("How many minutes are in an hour?", ["30", "60", "90", "100"], 1)],
    "moral_disputes": [("Utilitarianism judges actions by their", ["consequences", "motives only", "legality", "tradition"], 0), ("Kant's ethics is an example of", ["deontology", "hedonism", "egoism", "relativism"], 0), ("Moral relativism holds that moral truths", ["are universal", "depend on culture or perspective", "are scientific laws", "do not matter"], 1)],
    "moral_scenarios": [("Scenario: I returned a lost wallet to its owner. Is this morally wrong?", ["wrong", "not wrong", "both", "cannot say"], 1), ("Scenario: I took money from a friend's purse without asking. Is this morally wrong?", ["wrong", "not wrong", "both", "cannot say"], 0), ("Scenario: I helped my neighbor carry groceries. Is this morally wrong?", ["wrong", "not wrong", "both", "cannot say"], 1)],
    "nutrition": [("Which nutrient is the body's main source of energy?", ["carbohydrates", "vitamins", "minerals", "water"], 0), ("Vitamin C deficiency causes", ["rickets", "scurvy", "anemia", "goiter"], 1), ("Calcium is important mainly for", ["bones and teeth", "hair color", "eyesight", "hearing"], 0)],
    "philosophy": [("'I think, therefore I am' was written by", ["Plato", "Descartes", "Hume", "Nietzsche"], 1), ("The study of knowledge is called", ["ethics", "epistemology", "aesthetics", "metaphysics"], 1), ("Plato's teacher was", ["Aristotle", "Socrates", "Kant", "Locke"], 1)],
    "prehistory": [("The Stone Age is divided into Paleolithic, Mesolithic and", ["Neolithic", "Bronze", "Iron", "Classical"], 0), ("Stonehenge is located in", ["France", "England", "Egypt", "Peru"], 1), ("The domestication of plants began during the", ["Neolithic Revolution", "Industrial Revolution", "Renaissance", "Iron Age"], 0)],
    "professional_accounting": [("Assets equal liabilities plus", ["revenue", "equity", "expenses", "dividends"], 1), ("Depreciation allocates the cost of", ["a long-lived asset over its useful life", "inventory sold", "salaries", "taxes"], 0), ("Which statement shows revenues and expenses?", ["balance sheet", "income statement", "cash flow statement", "statement of equity"], 1)],
    "professional_law": [("A contract generally requires offer, acceptance and", ["consideration", "a witness", "a lawyer", "a court order"], 0), ("In criminal cases, guilt must be proved", ["on the balance of probabilities", "beyond a reasonable doubt", "by any evidence", "by confession only"], 1), ("Hearsay is", ["an out-of-court statement offered for its truth", "a written contract", "expert testimony", "a judge's ruling"], 0)],
    "professional_medicine": [("First-line treatment for anaphylaxis is", ["antibiotics", "epinephrine", "insulin", "aspirin"], 1), ("A myocardial infarction is a", ["stroke", "heart attack", "lung infection", "kidney stone"], 1), ("Type 1 diabetes results from", ["insulin resistance", "autoimmune destruction of beta cells", "excess sugar intake", "a virus of the liver"], 1)],
    "professional_psychology": [("Cognitive behavioral therapy focuses on", ["thoughts and behaviors", "dreams", "childhood only", "medication"], 0), ("The DSM is used to", ["diagnose mental disorders", "measure intelligence", "prescribe drugs", "test hearing"], 0), ("Informed consent in therapy requires that clients", ["understand and agree to treatment", "pay in advance", "be adults only", "sign a waiver of rights"], 0)],
    "public_relations": [("A press release is written mainly for", ["the media", "the accountants", "the lawyers", "the suppliers"], 0), ("Crisis communication aims to", ["protect an organization's reputation", "hide all information", "raise prices", "hire staff"], 0), ("Public relations manages relationships between an organization and its", ["publics", "machines", "buildings", "competitors' products"], 0)],
    "security_studies": [("Deterrence seeks to prevent attack by", ["threatening unacceptable costs", "disarming completely", "ignoring threats", "surrendering"], 0), ("NATO is a", ["military alliance", "trade union", "religious group", "sports league"], 0), ("Nuclear non-proliferation aims to", ["stop the spread of nuclear weapons", "build more reactors", "end all energy use", "share weapons"], 0)],
    "sociology": [("The study of society and social behavior is", ["sociology", "geology", "astronomy", "botany"], 0), ("Socialization is the process of", ["learning a society's norms", "building roads", "voting", "trading goods"], 0), ("Max Weber is known for his work on", ["bureaucracy", "gravity", "evolution", "relativity"], 0)],
    "us_foreign_policy": [("The Marshall Plan helped rebuild", ["Western Europe", "South America", "Japan only", "Africa"], 0), ("The Monroe Doctrine opposed European colonization in", ["Asia", "the Americas", "Africa", "Australia"], 1), ("The Cold War was mainly between the United States and", ["China", "the Soviet Union", "Germany", "France"], 1)],
    "virology": [("Viruses reproduce by", ["binary fission", "infecting host cells", "photosynthesis", "spores"], 1), ("Antibiotics are effective against", ["viruses", "bacteria", "all infections", "prions"], 1), ("HIV attacks mainly", ["red blood cells", "CD4 T cells", "neurons", "liver cells"], 1)],
    "world_religions": [("The holy book of Islam is the", ["Torah", "Quran", "Vedas", "Tripitaka"], 1), ("Buddhism was founded by", ["Siddhartha Gautama", "Confucius", "Moses", "Laozi"], 0), ("Diwali is a festival mainly of", ["Hinduism", "Christianity", "Judaism", "Shinto"], 0)],
}
MMLU_SUBJECTS = sorted(_MMLU)


def _arc_records(rows: list[tuple]) -> list[dict]:
    return [
        {"id": id_, "question": q, "choices": {"text": texts, "label": list(labels)}, "answerKey": key}
        for id_, q, texts, labels, key in rows
    ]


def _hellaswag_records(rows: list[tuple], split: str) -> list[dict]:
    records = []
    for ind, (label_, ctx_a, ctx_b, endings, label, source_id, split_type) in enumerate(rows):
        ctx = f"{ctx_a} {ctx_b}".strip() if ctx_b else ctx_a
        records.append({
            "ind": ind, "activity_label": label_, "ctx_a": ctx_a, "ctx_b": ctx_b, "ctx": ctx,
            "endings": endings, "source_id": source_id, "split": split, "split_type": split_type,
            "label": label,
        })
    return records


def _write_repo(root: Path, configs: dict[str | None, dict[str, list[dict]]], title: str) -> None:
    """Write one hub-style dataset repository: data files plus README `configs:` front matter."""
    lines = ["---", "configs:"]
    for config_name, splits in configs.items():
        lines.append(f"- config_name: {config_name or 'default'}")
        lines.append("  data_files:")
        for split, records in splits.items():
            rel = f"{config_name}/{split}.jsonl" if config_name else f"data/{split}.jsonl"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            lines += [f"  - split: {split}", f"    path: {rel}"]
    lines += ["---", "", f"# {title} (qexp fixture)", "",
              "A few hand-written items in the schema of the real dataset, written by",
              "`qexp.fixtures`. For offline plumbing tests only: scores on it mean nothing.", ""]
    (root / "README.md").write_text("\n".join(lines))


def write_fixtures(out: Path = FIXTURES_DIR) -> Path:
    """Write the ARC, HellaSwag and MMLU fixture mirrors under `out`, laid out by hub id."""
    out = Path(out)
    arc = {
        "ARC-Challenge": _arc_records(_ARC_CHALLENGE),
        "ARC-Easy": _arc_records(_ARC_EASY),
    }
    _write_repo(
        out / "allenai" / "ai2_arc",
        {name: {"train": rows[:2], "validation": rows[2:4], "test": rows[2:]} for name, rows in arc.items()},
        "allenai/ai2_arc",
    )
    _write_repo(
        out / "Rowan" / "hellaswag",
        {None: {"train": _hellaswag_records(_HELLASWAG[:2], "train"),
                "validation": _hellaswag_records(_HELLASWAG, "val")}},
        "Rowan/hellaswag",
    )
    mmlu = {}
    for subject in MMLU_SUBJECTS:
        rows = [{"question": q, "subject": subject, "choices": c, "answer": a} for q, c, a in _MMLU[subject]]
        mmlu[subject] = {"test": rows[:-1], "dev": rows[-1:]}
    _write_repo(out / "cais" / "mmlu", mmlu, "cais/mmlu")
    return out


if __name__ == "__main__":
    print(f"wrote {write_fixtures()}")
