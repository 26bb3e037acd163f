"""The relevance set (no tests here): captures and paraphrased queries that point at them."""

from __future__ import annotations

CAPTURES: list[tuple[str, str]] = [
    (
        "How does spaced repetition work for memorising vocabulary?",
        "You review each word just before you would forget it, at growing intervals.",
    ),
    (
        "Why do I forget things I studied last week?",
        "Memory decays along the forgetting curve unless you revisit the material.",
    ),
    (
        "What is photosynthesis exactly?",
        "Plants use sunlight, water and carbon dioxide to make glucose and oxygen.",
    ),
    (
        "Can you explain how vaccines train the immune system?",
        "They show your body a harmless piece of a pathogen so it builds antibodies.",
    ),
    (
        "I want to understand compound interest.",
        "Interest earns interest: the balance grows exponentially over the years.",
    ),
    (
        "What's the difference between a virus and a bacterium?",
        "Bacteria are living cells; viruses need a host cell to replicate.",
    ),
    (
        "How do I get better at chess openings?",
        "Learn the principles: control the centre, develop pieces, castle early.",
    ),
    (
        "Tell me about the French Revolution.",
        "In 1789 the monarchy fell; the Bastille was stormed and a republic declared.",
    ),
    (
        "How does a neural network learn?",
        "It adjusts weights by backpropagation to reduce the error on examples.",
    ),
    (
        "What causes the seasons on Earth?",
        "The tilt of Earth's axis changes how directly sunlight hits each hemisphere.",
    ),
    (
        "How do I practise the guitar efficiently?",
        "Short daily sessions with a metronome beat long weekly marathons.",
    ),
    (
        "What is the Pythagorean theorem?",
        "In a right triangle the square of the hypotenuse equals the sum of the other squares.",
    ),
    (
        "Explain supply and demand to me.",
        "Prices rise when buyers want more than sellers offer, and fall when they want less.",
    ),
    (
        "How does sleep affect learning?",
        "During deep sleep the brain consolidates what you practised during the day.",
    ),
    (
        "What is the Krebs cycle?",
        "A chain of reactions in mitochondria that releases energy from nutrients.",
    ),
    (
        "How do black holes form?",
        "A massive star collapses under its own gravity after its fuel runs out.",
    ),
    (
        "What's a good way to learn to cook?",
        "Master a few basic techniques like sautéing and roasting before recipes.",
    ),
    (
        "How does the stock market work?",
        "Shares of companies are bought and sold; prices reflect expected profits.",
    ),
    (
        "What is recursion in programming?",
        "A function that calls itself on a smaller input until a base case.",
    ),
    (
        "Why is the sky blue?",
        "Air molecules scatter short blue wavelengths of sunlight more than red ones.",
    ),
    (
        "How do I improve my public speaking?",
        "Rehearse aloud, slow down, and pause instead of filling silence with um.",
    ),
    (
        "What is inflation?",
        "A general rise in prices that reduces what each unit of money can buy.",
    ),
    (
        "How does DNA store information?",
        "Sequences of four bases encode the instructions for building proteins.",
    ),
    (
        "What were the causes of World War One?",
        "Alliances, militarism, nationalism and the assassination of Franz Ferdinand.",
    ),
    (
        "How do I stop procrastinating?",
        "Break the task into a tiny first step and start a timer for five minutes.",
    ),
    (
        "Explain the theory of evolution.",
        "Natural selection favours traits that help organisms survive and reproduce.",
    ),
    (
        "How do airplanes stay in the air?",
        "Wings are shaped so air pressure below them is higher, producing lift.",
    ),
    (
        "What is a prime number?",
        "A whole number greater than one divisible only by one and itself.",
    ),
    (
        "How can I learn Spanish grammar faster?",
        "Focus on the most common verb conjugations and use them in real sentences.",
    ),
    (
        "What does the Federal Reserve do?",
        "It sets interest rates and manages the money supply of the United States.",
    ),
    (
        "How do earthquakes happen?",
        "Tectonic plates slip along faults and release stored energy as waves.",
    ),
    ("What is meditation good for?", "Regular practice can reduce stress and improve attention."),
]

# (query, index of the capture it is about): worded differently from the capture.
QUERIES: list[tuple[str, int]] = [
    ("that thing about reviewing flashcards at increasing gaps", 0),
    ("why memories fade over time", 1),
    ("how leaves turn light into food", 2),
    ("immunization and antibodies", 3),
    ("money growing on itself in a savings account", 4),
    ("germs versus viruses", 5),
    ("first moves in a chess game", 6),
    ("storming of the Bastille and the fall of the king", 7),
    ("training deep learning models with gradients", 8),
    ("why summer is warmer than winter", 9),
    ("getting better at playing an instrument", 10),
    ("right angled triangle hypotenuse formula", 11),
    ("how prices are set by buyers and sellers", 12),
    ("does rest help memory", 13),
    ("cellular respiration energy in mitochondria", 14),
    ("collapsed stars and gravity", 15),
    ("becoming a better cook in the kitchen", 16),
    ("investing in company shares", 17),
    ("a function calling itself", 18),
    ("color of the daytime atmosphere", 19),
    ("nervous about presenting to an audience", 20),
    ("money losing value as prices go up", 21),
    ("genetic code and proteins", 22),
    ("what started the great war in 1914", 23),
    ("putting off work until later", 24),
    ("natural selection and survival of species", 25),
    ("how do jets fly", 26),
    ("numbers with no divisors", 27),
    ("conjugating verbs in a foreign language", 28),
    ("central bank and interest rates", 29),
    ("seismic activity and faults", 30),
    ("mindfulness to calm down", 31),
]
