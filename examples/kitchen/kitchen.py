"""The kitchen concierge: two agents, a nested playbook, a message between agents.

Run it with the scripted LLM (no network needed):

    durably run examples/kitchen/kitchen.py \
        --llm scripted:examples/kitchen/kitchen.scripted.json \
        --input "I've got chickpeas, spinach, a can of tomatoes and rice. I'm vegetarian."
"""

from durably import Agent, playbook


class Concierge(Agent):
    """You are a friendly kitchen concierge. You help a guest decide what to cook tonight
    with what they already have."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:QUE Say(user, Welcome the user)
        - 02:QUE $preferences:dict = GatherPreferences()
        - 03:YLD for call
        - 04:QUE Say(Chef, Ask the chef for a dish suggestion based on $preferences)
        - 05:YLD for agent
        - 06:QUE Say(user, Tell the user the chef's suggestion)
        - 07:YLD for exit"""

    @playbook(llm=True)
    async def GatherPreferences(self):
        """Collects the ingredients the user has and any dietary restriction.
        - 01:QUE Say(user, Ask the user which $ingredients:list they have and whether they
          follow a $diet:str)
        - 02:YLD for user
        - 03:RET dict with $ingredients and $diet"""


class Chef(Agent):
    """You are an expert home-cooking chef. You suggest one simple dish that fits the
    ingredients and the diet you are given."""

    @playbook(llm=True, public=True, triggers=("T1:EVT When asked to suggest a dish",))
    async def SuggestDish(self, ingredients, diet):
        """Suggests a single dish.
        - 01:TNK Think about a dish that uses the $ingredients and respects the $diet
        - 02:EXE Build $dish:dict with name, a one-line description and the cooking time
        - 03:RET $dish"""

    @playbook
    async def CookingTime(self, dish: str) -> int:
        """How long a dish takes, in minutes."""
        return 30
