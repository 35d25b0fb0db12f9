# Greeter
You greet a visitor of a small bookshop and recommend a book in their favourite genre.

```python
@playbook
async def Shelf(genre: str) -> list:
    """The books on the shelf for a genre."""
    shelf = {
        "mystery": ["The Moonstone", "The Daughter of Time"],
        "science fiction": ["Solaris", "The Dispossessed", "Kindred"],
    }
    return shelf.get(genre.lower(), [])
```

## Welcome
### Triggers
- At the beginning

### Steps
- Ask the user for their name and their favourite genre
- Look at the shelf for that genre and for science fiction, and count the books
- Recommend the first book of their genre, addressing the user by name
- End the program
